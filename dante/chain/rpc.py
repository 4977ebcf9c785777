"""A Solana cluster over JSON-RPC (devnet, mainnet-beta, or `dante up`'s local endpoint),
through solana-py's async client.

It needs the mint and, to pay withdrawals, the treasury's keypair; deposits are verified
from `getTransaction` (base64), the destination's owner from its post token balances.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import msgspec
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.keypair import Keypair
from solders.signature import Signature

from dante.chain import ChainError, spl
from dante.schemas.chain import SignatureStatus, SignedPayout, TokenTransfer

#: Well-known clusters, by their RPC URL's host.
_CLUSTERS = {
    "api.devnet.solana.com": "devnet",
    "api.testnet.solana.com": "testnet",
    "api.mainnet-beta.solana.com": "mainnet-beta",
}


class RpcChain:
    """`Chain` over a cluster's JSON-RPC endpoint."""

    local = False

    def __init__(
        self, url: str, *, mint: str, treasury: Keypair, cluster: str | None = None
    ) -> None:
        self.url = url
        self.cluster = cluster or _CLUSTERS.get(urlsplit(url).hostname or "", url)
        self.mint = str(spl.pubkey(mint))
        self._treasury = treasury
        self.treasury = str(treasury.pubkey())
        self.treasury_account = str(spl.token_account(treasury.pubkey(), spl.pubkey(mint)))
        self._client = AsyncClient(url, commitment=Confirmed, timeout=10)

    async def _call(self, request: Any) -> Any:
        try:
            return await request
        except RPCException as exc:
            raise ChainError(_message(exc)) from None
        except (SolanaRpcException, OSError) as exc:
            raise ChainError(f"{self.url}: {exc}", unreachable=True) from None

    async def slot(self) -> int:
        return int((await self._call(self._client.get_slot())).value)

    async def block_height(self) -> int:
        return int((await self._call(self._client.get_block_height())).value)

    async def latest_blockhash(self) -> tuple[str, int]:
        value = (await self._call(self._client.get_latest_blockhash())).value
        return str(value.blockhash), int(value.last_valid_block_height)

    async def token_balance(self, owner: str) -> int:
        account = spl.token_account(spl.pubkey(owner), spl.pubkey(self.mint))
        try:
            answer = await self._call(self._client.get_token_account_balance(account))
        except ChainError as exc:
            if not exc.unreachable and "could not find account" in str(exc):
                return 0
            raise
        return int(answer.value.amount)

    async def sol_balance(self, owner: str) -> int:
        return int((await self._call(self._client.get_balance(spl.pubkey(owner)))).value)

    async def transfer(self, signature: str) -> TokenTransfer | None:
        answer = await self._call(
            self._client.get_transaction(
                Signature.from_string(signature),
                encoding="base64",
                max_supported_transaction_version=0,
            )
        )
        found = answer.value
        if found is None:
            return None
        meta = found.transaction.meta
        if meta is None or meta.err is not None:
            return None
        tx = found.transaction.transaction
        transfer = spl.read_transfer(tx, found.slot)
        if transfer is None:
            return None
        keys = [str(k) for k in tx.message.account_keys]
        owner = ""
        for balance in meta.post_token_balances or []:
            if keys[balance.account_index] == transfer.destination and balance.owner:
                owner = str(balance.owner)
        return msgspec.structs.replace(transfer, destination_owner=owner)

    async def signature_status(self, signature: str) -> SignatureStatus | None:
        answer = await self._call(
            self._client.get_signature_statuses([Signature.from_string(signature)])
        )
        (status,) = answer.value
        if status is None:
            return None
        level = str(status.confirmation_status or "").lower()
        return SignatureStatus(
            slot=int(status.slot),
            confirmed=level.endswith(("confirmed", "finalized")),
            error=None if status.err is None else str(status.err),
        )

    async def sign_payout(self, to_owner: str, amount: int, *, memo: str) -> SignedPayout:
        blockhash, last_valid = await self.latest_blockhash()
        tx = spl.payout_transaction(
            self._treasury,
            mint=self.mint,
            to_owner=to_owner,
            amount=amount,
            note=memo,
            blockhash=blockhash,
        )
        return SignedPayout(
            signature=str(tx.signatures[0]),
            transaction=bytes(tx),
            last_valid_block_height=last_valid,
        )

    async def send(self, transaction: bytes) -> str:
        answer = await self._call(
            self._client.send_raw_transaction(
                transaction, opts=TxOpts(skip_confirmation=True, preflight_commitment=Confirmed)
            )
        )
        return str(answer.value)

    async def faucet(self, owner: str, amount: int) -> str:  # noqa: ARG002
        raise ChainError(f"{self.cluster} has no faucet for dGPU: it is bought, not minted")

    async def close(self) -> None:
        await self._client.close()


def _message(exc: RPCException) -> str:
    arg = exc.args[0] if exc.args else exc
    message = getattr(arg, "message", None)
    return str(message) if message else str(arg)
