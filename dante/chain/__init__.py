"""The chain boundary: dGPU as an SPL token on Solana.

`Chain` is what the platform needs of a chain. `LocalChain` (`local.py`) runs the real Solana
runtime in-process (LiteSVM) with its accounts kept in the data folder; `RpcChain` (`rpc.py`)
talks to a cluster over JSON-RPC. `spl.py` builds and reads the transactions, `keys.py` reads
and writes keypairs in the Solana CLI's format. This package imports the wire contracts and
nothing else of Dante.
"""

from __future__ import annotations

from typing import Protocol

from dante.chain.spl import DECIMALS
from dante.schemas.chain import SignatureStatus, SignedPayout, TokenTransfer


class ChainError(Exception):
    """The chain refused a transaction, or could not be reached."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class Chain(Protocol):
    """A Solana cluster holding the dGPU mint and the platform's treasury."""

    @property
    def cluster(self) -> str:
        """`local`, `devnet`, `mainnet-beta`, or the RPC URL."""

    @property
    def local(self) -> bool:
        """True for the embedded chain: it has a faucet."""

    @property
    def mint(self) -> str: ...

    @property
    def treasury(self) -> str:
        """The treasury's owner (its keypair's public key)."""

    @property
    def treasury_account(self) -> str:
        """The treasury's associated token account: where deposits go."""

    async def token_balance(self, owner: str) -> int:
        """µdGPU in the owner's associated token account (0 when it has none)."""

    async def sol_balance(self, owner: str) -> int: ...

    async def slot(self) -> int: ...

    async def block_height(self) -> int: ...

    async def latest_blockhash(self) -> tuple[str, int]:
        """A recent blockhash and the last block height at which a transaction using it lands."""

    async def transfer(self, signature: str) -> TokenTransfer | None:
        """The confirmed transfer_checked of this transaction, or None (unknown, failed, or
        not exactly one token transfer)."""

    async def sign_payout(self, to_owner: str, amount: int, *, memo: str) -> SignedPayout:
        """A signed transfer of `amount` from the treasury to `to_owner`'s token account
        (created if missing), with `memo` (naming the withdrawal, so that two payouts of
        one amount to one address are two transactions). Nothing is sent."""

    async def send(self, transaction: bytes) -> str:
        """Send a signed transaction; its signature. Raises `ChainError` when refused."""

    async def signature_status(self, signature: str) -> SignatureStatus | None: ...

    async def faucet(self, owner: str, amount: int) -> str:
        """Local chain only: mint test dGPU to the owner and give it SOL for fees."""

    async def close(self) -> None: ...


__all__ = [
    "DECIMALS",
    "Chain",
    "ChainError",
    "SignatureStatus",
    "SignedPayout",
    "TokenTransfer",
]
