"""Deposits are payments: the command service credits only what it verified on chain."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from solders.keypair import Keypair

from dante.chain import spl
from dante.chain.local import LocalChain
from dante.client.commands import Client, CommandError, new_command_id
from dante.client.payments import PaymentError, faucet, pay_deposit
from dante.events.store import EventStore
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.schemas.chain import deposit_memo
from dante.schemas.results import WalletResult
from dante.services.chain import ChainQueries
from dante.services.commands import CommandService

pytestmark = pytest.mark.anyio

DGPU = 1_000_000


async def events(store: EventStore) -> list[ev.Event]:
    return [r.event async for r in store.read()]


async def transfer(
    chain: LocalChain,
    payer: Keypair,
    amount: int,
    *,
    memo: str,
    to: str | None = None,
) -> str:
    """A transfer made from another wallet app: straight to the chain."""
    blockhash, _ = await chain.latest_blockhash()
    tx = spl.deposit_transaction(
        payer,
        mint=chain.mint,
        treasury=to or chain.treasury,
        amount=amount,
        note=memo,
        blockhash=blockhash,
    )
    return await chain.send(bytes(tx))


async def refused(client: Client, command: cmd.Deposit) -> CommandError:
    with pytest.raises(CommandError) as info:
        await client.send(command, WalletResult)
    return info.value


def deposit(amount: int, signature: str | None = None, **fields: str) -> cmd.Deposit:
    return cmd.Deposit(command_id=new_command_id(), amount=amount, signature=signature, **fields)


async def test_a_transfer_made_elsewhere_is_credited_by_its_signature(
    as_, store: EventStore, chain: LocalChain
) -> None:
    alice = as_("renter", "alice")
    payer = Keypair()
    await chain.faucet(str(payer.pubkey()), 3 * DGPU)
    signature = await transfer(chain, payer, 3 * DGPU, memo=deposit_memo("alice"))
    result = await alice.send(deposit(3 * DGPU, signature), WalletResult)
    assert result.available_udgpu == 3 * DGPU
    deposited, credited = await events(store)
    assert isinstance(deposited, ev.FundsDeposited) and deposited.signature == signature
    assert isinstance(credited, ev.PaymentCredited)
    assert (credited.wallet_id, credited.amount, credited.source_owner) == (
        "alice",
        3 * DGPU,
        str(payer.pubkey()),
    )


async def test_what_the_chain_does_not_show_is_never_credited(
    as_, store: EventStore, chain: LocalChain
) -> None:
    alice = as_("renter", "alice")
    payer = Keypair()
    await chain.faucet(str(payer.pubkey()), 10 * DGPU)

    # No payment at all.
    error = await refused(alice, deposit(DGPU))
    assert (error.code, error.info.field) == ("invalid", "signature")
    assert "signature of its transfer" in str(error)
    # A signature the chain never saw.
    forged = str(Keypair().sign_message(b"no such transaction"))
    error = await refused(alice, deposit(DGPU, forged))
    assert "no confirmed token transfer" in str(error) and forged in str(error)
    # A transfer to someone else's token account.
    other = str(Keypair().pubkey())
    await chain.faucet(other, 1)  # its token account exists
    elsewhere = await transfer(chain, payer, DGPU, memo=deposit_memo("alice"), to=other)
    error = await refused(alice, deposit(DGPU, elsewhere))
    assert "not the platform's treasury" in str(error)
    # A payment whose memo names another account.
    bobs = await transfer(chain, payer, DGPU, memo=deposit_memo("bob"))
    error = await refused(alice, deposit(DGPU, bobs))
    assert "does not name this account" in str(error)
    # A payment of less than the deposit claims.
    small = await transfer(chain, payer, DGPU, memo=deposit_memo("alice"))
    error = await refused(alice, deposit(2 * DGPU, small))
    assert error.info.field == "amount"
    assert "moved 1 dGPU, not the 2 dGPU" in str(error)
    # A transaction that is not a transfer (the faucet's mint).
    minted = await chain.faucet(str(payer.pubkey()), DGPU)
    error = await refused(alice, deposit(DGPU, minted))
    assert "no confirmed token transfer" in str(error)
    assert await events(store) == []


async def test_a_signature_is_credited_once_ever_whoever_asks(
    as_, store: EventStore, chain: LocalChain
) -> None:
    alice, mallory = as_("renter", "alice"), as_("renter", "mallory")
    payer = Keypair()
    await chain.faucet(str(payer.pubkey()), 2 * DGPU)
    signature = await transfer(chain, payer, 2 * DGPU, memo=deposit_memo("alice"))
    # Several instances of the same claim at once: one wins.
    results = await asyncio.gather(
        *(alice.send(deposit(2 * DGPU, signature), WalletResult) for _ in range(4)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, WalletResult) for r in results) == 1
    assert all(isinstance(r, WalletResult) or "already credited" in str(r) for r in results), (
        results
    )
    error = await refused(alice, deposit(2 * DGPU, signature))
    assert "already credited" in str(error)
    error = await refused(mallory, deposit(2 * DGPU, signature))
    assert error.code == "invalid"  # its memo names alice, and it is spent anyway
    deposits = [e for e in await events(store) if isinstance(e, ev.FundsDeposited)]
    assert len(deposits) == 1


async def test_the_client_signs_sends_and_is_credited(
    as_, store: EventStore, chain: LocalChain
) -> None:
    alice = as_("renter", "alice")
    payer = Keypair()
    with pytest.raises(PaymentError, match="dante chain faucet"):
        await pay_deposit(alice, payer, DGPU, command_id=new_command_id())
    await faucet(alice, str(payer.pubkey()), 5 * DGPU)
    signature, result = await pay_deposit(alice, payer, 4 * DGPU, command_id=new_command_id())
    assert result.available_udgpu == 4 * DGPU
    assert await chain.token_balance(chain.treasury) == 4 * DGPU
    assert await chain.token_balance(str(payer.pubkey())) == DGPU
    (deposited, _) = await events(store)
    assert isinstance(deposited, ev.FundsDeposited) and deposited.signature == signature


async def test_two_equal_deposits_from_one_keypair_at_once_are_two_payments(
    as_, store: EventStore, chain: LocalChain
) -> None:
    # Same payer, amount and blockhash: only the memo's nonce (the command's) tells the two
    # transactions apart; without it they were one signature, and the second was refused.
    alice = as_("renter", "alice")
    payer = Keypair()
    await faucet(alice, str(payer.pubkey()), 5 * DGPU)
    first, _ = await pay_deposit(alice, payer, DGPU, command_id=new_command_id())
    second, result = await pay_deposit(alice, payer, DGPU, command_id=new_command_id())
    assert first != second
    assert result.available_udgpu == 2 * DGPU
    assert await chain.token_balance(chain.treasury) == 2 * DGPU


async def test_a_transaction_the_chain_refuses_is_not_credited(
    as_, store: EventStore, chain: LocalChain
) -> None:
    alice = as_("renter", "alice")
    payer = Keypair()
    await chain.faucet(str(payer.pubkey()), DGPU)
    blockhash, _ = await chain.latest_blockhash()
    tx = spl.deposit_transaction(
        payer,
        mint=chain.mint,
        treasury=chain.treasury,
        amount=5 * DGPU,
        note=deposit_memo("alice"),
        blockhash=blockhash,
    )
    command = deposit(
        5 * DGPU, str(tx.signatures[0]), transaction=base64.b64encode(bytes(tx)).decode()
    )
    error = await refused(alice, command)
    assert "the chain refused the transfer" in str(error) and "insufficient funds" in str(error)
    assert await events(store) == []
    assert await chain.token_balance(chain.treasury) == 0


class Devnet(LocalChain):
    """A chain that is not the local one (as a cluster over RPC would be)."""

    cluster = "devnet"  # type: ignore[misc]
    local = False  # type: ignore[misc]


async def test_the_faucet_is_refused_on_a_real_cluster(
    nc: NATS, store: EventStore, tmp_path: Path
) -> None:
    devnet = Devnet(tmp_path / "devnet")
    service = CommandService(nc, store, chain=devnet, extensions=[ChainQueries(devnet)])
    await service.start()
    try:
        alice = Client(nc, "renter", "alice", timeout=5)
        with pytest.raises(CommandError) as info:
            await faucet(alice, str(Keypair().pubkey()), DGPU)
        assert info.value.code == "forbidden"
        assert "local chain only" in str(info.value) and "devnet" in str(info.value)
        assert (await alice.ask(cmd.GetChain())).local is False
    finally:
        await service.stop()
