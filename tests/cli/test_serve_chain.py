"""`dante serve` and the chain: a cluster only for the commands, the local chain only once."""

from __future__ import annotations

from pathlib import Path

import pytest

from dante.chain.local import LocalChain
from dante.events.natsd import NatsServer
from tests.cli.platform_proc import dante, environment


def test_a_cluster_is_for_the_commands_part(tmp_path: Path) -> None:
    ran = dante(
        "serve",
        "handlers",
        *("--data-dir", str(tmp_path / "data")),
        *("--solana-rpc", "http://127.0.0.1:1", "--mint", "x", "--treasury-keypair", "k.json"),
        env=environment({"DANTE_PLATFORM_PASSWORD": "unused"}),
        clean=True,
    )
    assert ran.returncode == 2, ran.stderr
    assert "--solana-rpc is for the commands part" in ran.stderr
    ran = dante(
        "serve",
        "commands",
        *("--data-dir", str(tmp_path / "data"), "--mint", "x"),
        env=environment({"DANTE_PLATFORM_PASSWORD": "unused"}),
        clean=True,
    )
    assert ran.returncode == 2 and "--mint and --treasury-keypair go with --solana-rpc" in (
        ran.stderr
    )


@pytest.mark.anyio
async def test_the_commands_do_not_open_a_local_chain_another_process_holds(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    # `dante up` holds its data folder's local chain: a `dante serve commands` on that folder
    # would run from the same files with balances of its own. It says so and stops.
    data = tmp_path / "data"
    held = LocalChain(data / "chain")
    try:
        ran = dante(
            "serve",
            "commands",
            *("--data-dir", str(data), "--nats-url", nats_server.url),
            env=environment({"DANTE_PLATFORM_PASSWORD": "platform-pass"}),
            clean=True,
            timeout=120,
        )
    finally:
        await held.close()
    assert ran.returncode == 1, ran.stderr
    assert "the local chain in" in ran.stderr and "open in another process" in ran.stderr
    assert "ready" not in ran.stdout
