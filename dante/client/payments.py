"""Paying for a deposit: sign a dGPU transfer to the treasury, have the platform send it,
verify it on chain and credit it. The CLI, the demo and the tests share this."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from dante.chain import spl
from dante.schemas import commands as cmd
from dante.schemas.chain import FaucetResult, deposit_memo
from dante.schemas.money import format_dgpu

if TYPE_CHECKING:
    from solders.keypair import Keypair

    from dante.client.commands import Client
    from dante.schemas.results import WalletResult

#: What a transfer costs in fees, in lamports (one signature), with a margin.
FEE_LAMPORTS = 10_000


class PaymentError(Exception):
    """The keypair cannot pay (too little dGPU or SOL); nothing was sent."""


async def pay_deposit(
    client: Client,
    keypair: Keypair,
    amount: int,
    *,
    command_id: str,
    reference: str = "",
) -> tuple[str, WalletResult]:
    """Sign a transfer of `amount` µdGPU from the keypair to the treasury, with a memo naming
    the client's account, and deposit it. Its signature and the platform's answer."""
    address = str(keypair.pubkey())
    info = await client.ask(cmd.GetChain(address=address))
    balance = info.address_balance_udgpu or 0
    if balance < amount:
        hint = f"; fund it first: dante chain faucet {address} AMOUNT" if info.local else ""
        raise PaymentError(
            f"{address} holds {format_dgpu(balance)} dGPU on the {info.cluster} chain, less "
            f"than the {format_dgpu(amount)} dGPU to deposit{hint}"
        )
    if (info.address_lamports or 0) < FEE_LAMPORTS:
        raise PaymentError(f"{address} has no SOL to pay the transaction fee")
    tx = spl.deposit_transaction(
        keypair,
        mint=info.mint,
        treasury=info.treasury,
        amount=amount,
        note=deposit_memo(client.identity, command_id[:16]),
        blockhash=info.blockhash,
    )
    signature = str(tx.signatures[0])
    result = await client.ask(
        cmd.Deposit(
            command_id=command_id,
            amount=amount,
            reference=reference,
            signature=signature,
            transaction=base64.b64encode(bytes(tx)).decode(),
        )
    )
    return signature, result


async def faucet(client: Client, address: str, amount: int) -> FaucetResult:
    from dante.client.commands import new_command_id

    return await client.ask(cmd.Faucet(command_id=new_command_id(), address=address, amount=amount))
