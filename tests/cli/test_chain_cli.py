"""`dante chain …` and `dante audit --chain`: the money in the log against the chain."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from solders.keypair import Keypair

from dante.chain.keys import read_keypair
from dante.chain.local import LocalChain
from dante.chain.rpc import RpcChain
from dante.client.commands import Client, new_command_id
from dante.events.records import Append
from dante.schemas import commands as cmd
from tests.cli.cli import run_dante
from tests.cli.conftest import Market
from tests.cli.platform_proc import UpProcess
from tests.factories import SIGNATURE, SOLANA, deposit
from tests.funding import fund
from tests.handlers.harness import DGPU, submit

pytestmark = pytest.mark.anyio


def chain_of(market: Market) -> LocalChain:
    chain = market.platform.chain
    assert isinstance(chain, LocalChain)
    return chain


async def audit(market: Market) -> dict:  # type: ignore[type-arg]
    ran = await market.dante("audit", "--chain", "--json", "--skip-views", user=None)
    assert ran.code in (0, 1), ran
    return ran.json()  # type: ignore[no-any-return]


async def test_status_balance_and_the_faucet(market: Market) -> None:
    ran = await market.dante("chain", "status", "--json")
    assert ran.code == 0, ran
    status = ran.json()
    chain = chain_of(market)
    assert (status["cluster"], status["mint"], status["treasury"]) == (
        "local",
        chain.mint,
        chain.treasury,
    )
    assert status["treasury_balance_udgpu"] == 0 and status["decimals"] == 6
    text = await market.dante("chain", "status")
    assert "cluster        local (embedded in dante up)" in text.out, text
    address = str(Keypair().pubkey())
    ran = await market.dante("chain", "faucet", address, "2.5", "--json")
    assert ran.code == 0 and ran.json()["balance_udgpu"] == 2_500_000, ran
    ran = await market.dante("chain", "balance", address)
    assert ran.out.startswith(f"{address}: 2.50 dGPU, 1 SOL on the local chain"), ran
    ran = await market.dante("chain", "balance", "not-an-address")
    assert ran.code == 2 and "not a Solana address" in ran.err


async def test_audit_chain_is_clean_after_deposits_jobs_and_payouts(market: Market) -> None:
    await fund(Client(market.nc, "renter", "alice"), 10 * DGPU)
    job_id = await submit(market.nc, gpu_count=1)
    await market.platform.settle()
    await market.agent.start(job_id)
    market.clock.advance(60)
    await market.agent.tick(job_id, ms=60_000)
    await market.agent.finish(job_id)
    await market.platform.settle()
    earned = market.platform.tail.world.wallet("bob").available
    assert earned > 0
    await fund(Client(market.nc, "renter", "bob"), 10 * DGPU)  # to reach the minimum
    bob = Client(market.nc, "provider", "bob")
    await bob.ask(cmd.Withdraw(command_id=new_command_id(), amount=10 * DGPU + earned))
    await market.platform.settle()
    assert await market.platform.settle_payouts() == 0
    chain = chain_of(market)
    assert await chain.token_balance(SOLANA) == 10 * DGPU + earned
    report = await audit(market)
    assert report["ok"] is True, report["violations"]
    assert report["counts"]["chain_treasury"] == 0 and "chain_payout" in report["counts"]
    assert await chain.token_balance(chain.treasury) == 20 * DGPU - 10 * DGPU - earned


async def test_audit_chain_names_what_the_chain_does_not_show(market: Market) -> None:
    await fund(Client(market.nc, "renter", "alice"), 5 * DGPU)
    # Money moved out of the treasury with no withdrawal in the log.
    chain = chain_of(market)
    stolen = await chain.sign_payout(str(Keypair().pubkey()), DGPU, memo="stolen")
    await chain.send(stolen.transaction)
    # And a deposit in the log that no transaction paid, and one naming an unknown one.
    await market.platform.store.append(Append(event=deposit("mallory", 3, event_id="forged-1")))
    forged = deposit("mallory", 2, event_id="forged-2", signature=SIGNATURE)
    await market.platform.store.append(Append(event=forged))
    report = await audit(market)
    assert report["ok"] is False
    codes = {v["code"]: v["message"] for v in report["violations"]}
    assert (
        "holds 4 dGPU on the local chain, but the log's deposits minus payouts are 7 dGPU"
        in (codes["chain_treasury"])
    )
    assert "without a transaction" in codes["chain_unpaid_deposit"]
    assert "the chain has no such transfer" in codes["chain_deposit"]
    plain = await market.dante("audit", "--chain", "--skip-views", user=None)
    assert plain.code == 1 and "chain_treasury" in plain.out
    # Without --chain the log alone is consistent (the chain is not looked at).
    alone = await market.dante("audit", "--json", "--skip-views", user=None)
    assert "chain_treasury" not in json.loads(alone.out)["counts"]


async def test_dante_up_serves_its_chain_over_json_rpc(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "LOG_LEVEL": "warning"}
    up = UpProcess(
        tmp_path / "data", None, "--processes", "1", "--chain-rpc-port", "-1", env=env
    ).start()
    try:
        said = "".join(up.output)
        found = re.search(r"local chain JSON-RPC: (http://127\.0\.0\.1:\d+)", said)
        assert found, said
        alice = {**env, "DANTE_PASSWORD": "alice-secret"}
        ran = run_dante("account", "create", "--no-login", url=up.url, user="alice", env=alice)
        assert ran.code == 0, ran
        ran = run_dante("chain", "status", "--json", url=up.url, user="alice", env=alice)
        assert ran.code == 0, ran
        status = ran.json()
        treasury = read_keypair(tmp_path / "data" / "chain" / "treasury.json")
        rpc = RpcChain(found[1], mint=status["mint"], treasury=treasury)
        try:
            assert rpc.treasury == status["treasury"]
            assert await rpc.token_balance(rpc.treasury) == status["treasury_balance_udgpu"]
            assert await rpc.block_height() >= status["block_height"]
        finally:
            await rpc.close()
    finally:
        assert up.stop() == 0


def test_a_cluster_needs_its_mint_and_treasury(tmp_path: Path) -> None:
    ran = run_dante(
        "up", "--data-dir", str(tmp_path), "--solana-rpc", "https://api.devnet.solana.com",
        url=None,
    )  # fmt: skip
    assert ran.code == 2 and "needs --mint" in ran.err, ran
