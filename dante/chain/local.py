"""The local chain: the real Solana runtime in-process (LiteSVM), kept in the data folder.

LiteSVM runs the SPL Token, associated token account and memo programs as a cluster would.
Around it this module adds what a test validator has and LiteSVM lacks:

- **Persistence.** Every account a transaction touched is written, with the transaction
  itself, in one SQLite transaction (`ledger.sqlite`) after it ran, and put back with
  `set_account` on start: a restart keeps every balance and every signature.
- **Time.** Blocks advance with the wall clock (`block_time`, 0.4 s like Solana's slots), and
  a blockhash is valid for 150 blocks after its own, so a transaction that was not sent in
  time really expires, as on a cluster. Blockhashes are derived from the ledger's seed and the
  block height; LiteSVM's own check (one blockhash at a time) is switched off for this one.
- **Keys.** The mint (6 decimals) and the treasury keypair are made on first start and kept
  in the folder, readable by the owner only. The treasury is the mint's authority (the faucet
  mints test dGPU) and pays the fees of payouts.
- **One process.** The chain lives in the process that opened it (`lock` in the folder,
  held until `close`): a second one would run from the same files with balances of its own
  and overwrite the first's. So only one process may serve a local chain's commands; a
  deployment with several command processes settles on a Solana cluster (`--solana-rpc`).
- **Failure on demand.** `drop_next(n)` makes the next n sends vanish, as a cluster may drop
  a transaction it accepted; the settlement tests use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import msgspec
from solders.account import Account
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata

from dante.chain import DECIMALS, ChainError, spl
from dante.chain.keys import load_or_create
from dante.locks import LockHeld, hold, release
from dante.schemas.chain import SignatureStatus, SignedPayout, TokenTransfer

#: How many blocks a blockhash stays usable, as on Solana.
BLOCKHASH_VALIDITY: Final = 150
LAMPORTS_PER_SOL: Final = 1_000_000_000
_TREASURY_SOL: Final = 1_000 * LAMPORTS_PER_SOL
_FAUCET_SOL: Final = LAMPORTS_PER_SOL

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    pubkey TEXT PRIMARY KEY, lamports INTEGER NOT NULL, data BLOB NOT NULL,
    owner TEXT NOT NULL, executable INTEGER NOT NULL, rent_epoch INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS transactions (
    signature TEXT PRIMARY KEY, slot INTEGER NOT NULL, tx BLOB NOT NULL);
"""


class LocalChain:
    """A one-node Solana chain in a folder (`<data>/chain`)."""

    cluster: Final = "local"
    local: Final = True

    def __init__(
        self, folder: Path, *, block_time: float = 0.4, clock: Callable[[], float] = time.time
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        self.folder = folder
        self._block_time = block_time
        self._clock = clock
        self._drop = 0
        self._lock = _hold(folder)
        try:
            self._open(folder)
        except BaseException:
            release(self._lock)
            raise

    def _open(self, folder: Path) -> None:
        """Open the ledger and put its accounts back (or make the mint and treasury)."""
        self._db = sqlite3.connect(folder / "ledger.sqlite", isolation_level=None)
        self._db.executescript(_SCHEMA)
        self._svm = LiteSVM().with_blockhash_check(False)  # noqa: FBT003
        self._mint_key = load_or_create(folder / "mint.json")
        self._treasury_key = load_or_create(folder / "treasury.json")
        self.mint = str(self._mint_key.pubkey())
        self.treasury = str(self._treasury_key.pubkey())
        self.treasury_account = str(
            spl.token_account(self._treasury_key.pubkey(), self._mint_key.pubkey())
        )
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if "genesis" not in meta:
            self._genesis()
        else:
            self._seed = bytes.fromhex(meta["seed"])
            self._start = float(meta["genesis"])
            for row in self._db.execute("SELECT * FROM accounts"):
                key, lamports, data, owner, executable, rent_epoch = row
                self._svm.set_account(
                    Pubkey.from_string(key),
                    Account(
                        lamports,
                        bytes(data),
                        Pubkey.from_string(owner),
                        bool(executable),
                        rent_epoch,
                    ),
                )

    # ── first start ─────────────────────────────────────────────────────────────────────

    def _genesis(self) -> None:
        self._seed = os.urandom(32)
        self._start = self._clock()
        treasury, mint = self._treasury_key, self._mint_key
        self._svm.airdrop(treasury.pubkey(), _TREASURY_SOL)
        rent = self._svm.minimum_balance_for_rent_exemption(spl.MINT_SIZE)
        init_mint = Instruction(
            spl.TOKEN_PROGRAM,
            # InitializeMint2: decimals, mint authority, no freeze authority
            bytes([20, DECIMALS]) + bytes(treasury.pubkey()) + bytes([0]) + bytes(32),
            [AccountMeta(mint.pubkey(), is_signer=False, is_writable=True)],
        )
        tx = spl.signed(
            [
                create_account(
                    CreateAccountParams(
                        from_pubkey=treasury.pubkey(),
                        to_pubkey=mint.pubkey(),
                        lamports=rent,
                        space=spl.MINT_SIZE,
                        owner=spl.TOKEN_PROGRAM,
                    )
                ),
                init_mint,
                spl.create_token_account(treasury.pubkey(), treasury.pubkey(), mint.pubkey()),
            ],
            treasury,
            self._blockhash_at(self._height()),
            mint,
        )
        with self._write():
            self._db.execute(
                "INSERT INTO meta VALUES ('seed', ?), ('genesis', ?)",
                (self._seed.hex(), repr(self._start)),
            )
            self._run(tx)

    # ── time ────────────────────────────────────────────────────────────────────────────

    def _height(self) -> int:
        # (a hair added: 60.4 s / 0.4 s is 150.99999… in floating point)
        return max(0, int((self._clock() - self._start) / self._block_time + 1e-9))

    def _blockhash_at(self, height: int) -> str:
        digest = hashlib.sha256(self._seed + height.to_bytes(8, "little")).digest()
        return str(Hash(digest))

    def _height_of(self, blockhash: str) -> int | None:
        now = self._height()
        for height in range(now, max(-1, now - BLOCKHASH_VALIDITY - 1), -1):
            if self._blockhash_at(height) == blockhash:
                return height
        return None

    # ── the Chain protocol ──────────────────────────────────────────────────────────────

    async def slot(self) -> int:
        return self._height()

    async def block_height(self) -> int:
        return self._height()

    async def latest_blockhash(self) -> tuple[str, int]:
        height = self._height()
        return self._blockhash_at(height), height + BLOCKHASH_VALIDITY

    async def token_balance(self, owner: str) -> int:
        return self.token_balance_now(owner)

    def token_balance_now(self, owner: str) -> int:
        account = self._svm.get_account(
            spl.token_account(spl.pubkey(owner), self._mint_key.pubkey())
        )
        return spl.token_amount(bytes(account.data)) if account is not None else 0

    async def sol_balance(self, owner: str) -> int:
        return self._svm.get_balance(spl.pubkey(owner)) or 0

    async def transfer(self, signature: str) -> TokenTransfer | None:
        row = self._db.execute(
            "SELECT slot, tx FROM transactions WHERE signature = ?", (signature,)
        ).fetchone()
        if row is None:
            return None
        found = spl.read_transfer(VersionedTransaction.from_bytes(row[1]), row[0])
        if found is None:
            return None
        account = self._svm.get_account(Pubkey.from_string(found.destination))
        owner = spl.token_owner(bytes(account.data)) if account is not None else ""
        return msgspec.structs.replace(found, destination_owner=owner)

    async def signature_status(self, signature: str) -> SignatureStatus | None:
        row = self._db.execute(
            "SELECT slot FROM transactions WHERE signature = ?", (signature,)
        ).fetchone()
        return None if row is None else SignatureStatus(slot=row[0], confirmed=True)

    async def sign_payout(self, to_owner: str, amount: int, *, memo: str) -> SignedPayout:
        blockhash, last_valid = await self.latest_blockhash()
        tx = spl.payout_transaction(
            self._treasury_key,
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
        try:
            tx = VersionedTransaction.from_bytes(transaction)
        except Exception as exc:
            raise ChainError(f"not a transaction: {exc}") from None
        signature = str(tx.signatures[0])
        known = self._db.execute(
            "SELECT 1 FROM transactions WHERE signature = ?", (signature,)
        ).fetchone()
        if known is not None:
            return signature  # a resend of a landed transaction changes nothing
        if self._drop:
            self._drop -= 1
            return signature
        if self._height_of(str(tx.message.recent_blockhash)) is None:
            raise ChainError("Blockhash not found: the transaction expired or was never valid")
        with self._write():
            self._run(tx)
        return signature

    async def faucet(self, owner: str, amount: int) -> str:
        to = spl.pubkey(owner)
        treasury, mint = self._treasury_key, self._mint_key.pubkey()
        blockhash, _ = await self.latest_blockhash()
        tx = spl.signed(
            [
                spl.create_token_account(treasury.pubkey(), to, mint),
                spl.mint_to_checked(treasury.pubkey(), mint, to, amount, DECIMALS),
            ],
            treasury,
            blockhash,
        )
        with self._write():
            if (self._svm.get_balance(to) or 0) < _FAUCET_SOL:
                self._svm.airdrop(to, _FAUCET_SOL)
                self._save(to)
            self._run(tx)
        return str(tx.signatures[0])

    async def close(self) -> None:
        self._db.close()
        lock, self._lock = self._lock, None
        release(lock)

    # ── for the JSON-RPC endpoint (`rpc_server.py`) ─────────────────────────────────────

    def record(self, signature: str) -> tuple[int, bytes] | None:
        """The slot and bytes of a landed transaction."""
        row = self._db.execute(
            "SELECT slot, tx FROM transactions WHERE signature = ?", (signature,)
        ).fetchone()
        return None if row is None else (row[0], bytes(row[1]))

    def account(self, address: str) -> Account | None:
        return self._svm.get_account(spl.pubkey(address))

    # ── for tests ───────────────────────────────────────────────────────────────────────

    def drop_next(self, count: int = 1) -> None:
        """The next `count` sends are accepted and then lost, as a cluster may lose them."""
        self._drop += count

    # ── running and keeping ─────────────────────────────────────────────────────────────

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _run(self, tx: VersionedTransaction) -> None:
        result = self._svm.send_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            logs = [line for line in result.meta().logs() if "failed" in line]
            detail = logs[-1] if logs else str(result.err())
            if detail.endswith("custom program error: 0x1"):
                detail += " (insufficient funds)"
            raise ChainError(f"transaction failed: {detail}")
        for key in tx.message.account_keys:
            self._save(key)
        self._db.execute(
            "INSERT INTO transactions VALUES (?, ?, ?)",
            (str(tx.signatures[0]), self._height(), bytes(tx)),
        )

    def _save(self, key: Pubkey) -> None:
        account = self._svm.get_account(key)
        if account is None or account.executable or account.owner == spl.SYSVAR_OWNER:
            return
        self._db.execute(
            "INSERT OR REPLACE INTO accounts VALUES (?, ?, ?, ?, ?, ?)",
            (
                str(key),
                account.lamports,
                bytes(account.data),
                str(account.owner),
                int(account.executable),
                account.rent_epoch,
            ),
        )


def _hold(folder: Path) -> int | None:
    """Take the folder's lock for this process, or raise `ChainError` naming the holder."""
    try:
        return hold(folder / "lock")
    except LockHeld as held:
        raise ChainError(
            f"the local chain in {folder} is open in another process (pid {held.holder}): "
            "only one process may hold it, the one that serves the commands (`dante up`); to "
            "serve commands from several processes, settle on a Solana cluster "
            "(--solana-rpc, --mint, --treasury-keypair)"
        ) from None
