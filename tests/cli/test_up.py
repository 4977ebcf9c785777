"""`dante up` as a real process: it answers `dante status`, stops on SIGTERM, resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dante.cli.connect import connect
from dante.cli.credentials import Credential
from dante.handlers.client import Client, new_command_id
from dante.schemas.commands import Deposit
from dante.schemas.results import WalletResult
from tests.cli.platform_proc import UpProcess, dante

pytestmark = pytest.mark.anyio

ALICE = {"DANTE_USERNAME": "alice", "DANTE_PASSWORD": "alice-secret-1"}


async def deposit(url: str, amount: int) -> WalletResult:
    credential = Credential(username="alice", secret=ALICE["DANTE_PASSWORD"], role="renter")
    nc = await connect(url, name="test", credential=credential)
    try:
        client = Client(nc, "renter", "alice")
        return await client.send(Deposit(command_id=new_command_id(), amount=amount), WalletResult)
    finally:
        await nc.close()


async def test_up_status_stop_and_resume(tmp_path: Path) -> None:
    platform = UpProcess(tmp_path / "data").start()
    try:
        result = platform.dante("status", "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["ok"] is True and report["services"][0]["name"] == "dante"
        created = platform.dante("account", "create", "--role", "renter", **ALICE)
        assert created.returncode == 0, created.stderr
        first = json.loads(platform.dante("status", "--json").stdout)["stream"]["last_seq"]
        assert first >= 1  # the account's opening is in the log, its secret is not
        assert (await deposit(platform.url, 5_000_000)).available_udgpu == 5_000_000
    finally:
        assert platform.stop() == 0
    assert "stopping (SIGTERM)" in "".join(platform.output)
    # The embedded nats-server went with it: nothing answers any more.
    result = platform.dante("status")
    assert result.returncode == 3 and "cannot reach" in result.stderr

    again = UpProcess(tmp_path / "data", platform.port).start()
    try:
        report = json.loads(again.dante("status", "--json").stdout)
        assert report["stream"]["last_seq"] == first + 1
        assert (await deposit(again.url, 1_000_000)).available_udgpu == 6_000_000
    finally:
        assert again.stop() == 0


def test_status_without_a_platform_exits_3(tmp_path: Path) -> None:
    result = dante("status", "--nats-url", "nats://127.0.0.1:1")
    assert result.returncode == 3
    assert "cannot reach the platform" in result.stderr


def test_up_refuses_a_taken_port(tmp_path: Path) -> None:
    first = UpProcess(tmp_path / "a").start()
    try:
        result = first.dante(
            "up",
            "--data-dir",
            str(tmp_path / "b"),
            "--port",
            str(first.port),
            "--monitor-port",
            "-1",
        )
        assert result.returncode == 1
        assert "--port" in result.stderr
    finally:
        first.stop()
