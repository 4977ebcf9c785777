"""The local chain: LiteSVM running the real SPL programs, kept in a folder."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from solders.keypair import Keypair

from dante.chain import ChainError, spl
from dante.chain.keys import KeypairError, read_keypair, write_keypair
from dante.chain.local import BLOCKHASH_VALIDITY, LocalChain
from dante.schemas.chain import deposit_memo

pytestmark = pytest.mark.anyio


class Wall:
    """A wall clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def deposit(chain: LocalChain, payer: Keypair, amount: int, memo: str = "x") -> str:
    blockhash, _ = await chain.latest_blockhash()
    tx = spl.deposit_transaction(
        payer,
        mint=chain.mint,
        treasury=chain.treasury,
        amount=amount,
        note=memo,
        blockhash=blockhash,
    )
    return await chain.send(bytes(tx))


async def test_a_transfer_is_read_back_as_the_chain_ran_it(tmp_path: Path) -> None:
    chain = LocalChain(tmp_path / "chain")
    payer = Keypair()
    await chain.faucet(str(payer.pubkey()), 7_000_000)
    assert await chain.token_balance(str(payer.pubkey())) == 7_000_000
    assert await chain.sol_balance(str(payer.pubkey())) > 0
    signature = await deposit(chain, payer, 2_500_000, deposit_memo("alice"))
    transfer = await chain.transfer(signature)
    assert transfer is not None
    assert (transfer.amount, transfer.mint, transfer.destination, transfer.memo) == (
        2_500_000,
        chain.mint,
        chain.treasury_account,
        "dante:deposit:alice",
    )
    assert transfer.source_owner == str(payer.pubkey())
    assert await chain.token_balance(chain.treasury) == 2_500_000
    assert await chain.token_balance(str(payer.pubkey())) == 4_500_000
    status = await chain.signature_status(signature)
    assert status is not None and status.confirmed
    # A faucet transaction mints: it is no transfer.
    assert await chain.transfer("1" * 64) is None


async def test_the_runtime_refuses_what_a_cluster_refuses(tmp_path: Path) -> None:
    chain = LocalChain(tmp_path / "chain")
    payer = Keypair()
    await chain.faucet(str(payer.pubkey()), 1_000_000)
    with pytest.raises(ChainError, match="insufficient funds"):
        await deposit(chain, payer, 2_000_000)  # more than it holds
    with pytest.raises(ChainError):
        await chain.send(b"not a transaction")
    assert await chain.token_balance(chain.treasury) == 0


async def test_balances_and_signatures_survive_a_restart(tmp_path: Path) -> None:
    folder = tmp_path / "chain"
    chain = LocalChain(folder)
    mint, treasury = chain.mint, chain.treasury
    payer = Keypair()
    await chain.faucet(str(payer.pubkey()), 3_000_000)
    signature = await deposit(chain, payer, 1_000_000)
    payee = str(Keypair().pubkey())
    payout = await chain.sign_payout(payee, 400_000, memo="test")
    assert await chain.send(payout.transaction) == payout.signature
    await chain.close()

    again = LocalChain(folder)
    assert (again.mint, again.treasury) == (mint, treasury)
    assert await again.token_balance(treasury) == 600_000
    assert await again.token_balance(str(payer.pubkey())) == 2_000_000
    assert await again.token_balance(payee) == 400_000
    assert await again.transfer(signature) is not None
    # A landed transaction sent again changes nothing.
    assert await again.send(payout.transaction) == payout.signature
    assert await again.token_balance(payee) == 400_000
    # And the chain goes on: the payer still spends what it has.
    await deposit(again, payer, 2_000_000)
    assert await again.token_balance(str(payer.pubkey())) == 0


async def test_keys_are_made_once_and_kept_private(tmp_path: Path) -> None:
    folder = tmp_path / "chain"
    await LocalChain(folder).close()
    for name in ("mint.json", "treasury.json"):
        mode = stat.S_IMODE((folder / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    treasury = read_keypair(folder / "treasury.json")
    again = LocalChain(folder)
    assert str(treasury.pubkey()) == again.treasury
    await again.close()


async def test_only_one_process_holds_a_local_chain(tmp_path: Path) -> None:
    # A second holder would run from the same files with balances of its own and
    # overwrite the first's: it is refused, naming the holder, and changes nothing.
    folder = tmp_path / "chain"
    chain = LocalChain(folder)
    payer = Keypair()
    await chain.faucet(str(payer.pubkey()), 1_000_000)
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from dante.chain import ChainError\n"
        "from dante.chain.local import LocalChain\n"
        "try:\n"
        "    LocalChain(Path(sys.argv[1]))\n"
        "except ChainError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", probe, str(folder)], capture_output=True, text=True, check=False
    )
    assert other.returncode == 3, other.stderr
    assert f"open in another process (pid {os.getpid()})" in other.stdout
    assert "--solana-rpc" in other.stdout
    assert await chain.token_balance(str(payer.pubkey())) == 1_000_000
    await chain.close()
    # Closed, it may be opened again, with what it held.
    again = LocalChain(folder)
    assert await again.token_balance(str(payer.pubkey())) == 1_000_000
    await again.close()


async def test_a_blockhash_expires_with_wall_time(tmp_path: Path) -> None:
    wall = Wall()
    chain = LocalChain(tmp_path / "chain", clock=wall)
    await chain.faucet(chain.treasury, 10)
    start = await chain.block_height()
    payee = str(Keypair().pubkey())
    payout = await chain.sign_payout(payee, 1, memo="test")
    assert payout.last_valid_block_height == start + BLOCKHASH_VALIDITY
    wall.now += 0.4 * (BLOCKHASH_VALIDITY + 1)
    assert await chain.block_height() > payout.last_valid_block_height
    with pytest.raises(ChainError, match="Blockhash not found"):
        await chain.send(payout.transaction)
    assert await chain.signature_status(payout.signature) is None
    # Signed again with a fresh blockhash, it lands.
    fresh = await chain.sign_payout(payee, 1, memo="test")
    await chain.send(fresh.transaction)
    assert await chain.token_balance(payee) == 1


async def test_a_dropped_send_never_lands(tmp_path: Path) -> None:
    chain = LocalChain(tmp_path / "chain")
    await chain.faucet(chain.treasury, 5)
    payout = await chain.sign_payout(str(Keypair().pubkey()), 5, memo="test")
    chain.drop_next()
    assert await chain.send(payout.transaction) == payout.signature
    assert await chain.signature_status(payout.signature) is None
    await chain.send(payout.transaction)  # resent: this time it lands
    assert await chain.signature_status(payout.signature) is not None


def test_keypair_files_are_the_solana_cli_format(tmp_path: Path) -> None:
    path = tmp_path / "id.json"
    keypair = Keypair()
    write_keypair(path, keypair)
    assert path.read_text().startswith("[") and read_keypair(path) == keypair
    (tmp_path / "bad.json").write_text('{"secret": 1}')
    with pytest.raises(KeypairError, match="not a Solana keypair"):
        read_keypair(tmp_path / "bad.json")
    with pytest.raises(KeypairError, match="no keypair"):
        read_keypair(tmp_path / "missing.json")
