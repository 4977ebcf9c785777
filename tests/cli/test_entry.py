"""What every `dante` command does before and after its own work: reading `.env`, and ending
quietly when the reader of its output goes away (`dante balance | head -2`)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import anyio
import pytest

from dante.client.transfer import send_output
from dante.schemas import commands as cmd
from tests.cli.cli import clean_env
from tests.cli.conftest import Market
from tests.cli.test_jobs import funded, script, submit


def _into_closed_pipe(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """`dante ARGS` writing its stdout into a pipe whose reader has already gone (what
    `| head -2` leaves once head has its lines): its exit status and its stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "dante", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=cwd,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    return done.returncode, done.stderr


def _env(market: Market, **extra: str) -> dict[str, str]:
    return clean_env(
        DANTE_NATS_URL=market.url,
        DANTE_USERNAME="alice",
        XDG_CONFIG_HOME=str(market.config),
        **extra,
    )


@pytest.mark.anyio
async def test_a_closed_pipe_ends_balance_and_logs_quietly(market: Market, tmp_path: Path) -> None:
    await funded(market)
    job_id = await submit(market, "--script", str(script(tmp_path)))
    await market.agent.start(job_id)
    lines = [
        cmd.OutputLine(at=datetime.now(UTC), stream="stdout", text=f"line {n}") for n in range(50)
    ]
    await send_output(market.agent.client, "prov-1", job_id, 1, lines)

    for args in (("balance",), ("jobs", "logs", job_id), ("jobs", "logs", job_id, "--json")):
        code, err = await anyio.to_thread.run_sync(
            partial(_into_closed_pipe, *args, env=_env(market), cwd=tmp_path)
        )
        # As a Unix tool killed by SIGPIPE: status 141, no traceback (only the platform's
        # lines about the job, which go to stderr).
        assert code == 141, (args, code, err)
        assert all(line.startswith("[dante] ") for line in err.splitlines()), (args, err)


@pytest.mark.anyio
async def test_head_takes_the_first_lines_without_a_traceback(
    market: Market, tmp_path: Path
) -> None:
    await funded(market)
    job_id = await submit(market, "--script", str(script(tmp_path)))
    await market.agent.start(job_id)
    lines = [
        cmd.OutputLine(at=datetime.now(UTC), stream="stdout", text=f"line {n}") for n in range(5000)
    ]
    for start in range(0, len(lines), 1000):
        await send_output(market.agent.client, "prov-1", job_id, 1, lines[start : start + 1000])
    pipeline = f"{sys.executable} -m dante jobs logs {job_id} | head -3"
    done = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            ["sh", "-c", pipeline],
            capture_output=True,
            text=True,
            env=_env(market),
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
    )
    assert done.stdout == "line 0\nline 1\nline 2\n"
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


@pytest.mark.anyio
async def test_every_command_reads_dotenv(market: Market, tmp_path: Path) -> None:
    await funded(market)
    here = tmp_path / "project"
    here.mkdir()
    (here / ".env").write_text(
        "# the renter's settings\n"
        "DANTE_USERNAME=alice\n"
        "DANTE_PASSWORD='alice-secret-1'\n"
        f"export NATS_ADDRESS={market.url}\n"
    )
    env = clean_env(XDG_CONFIG_HOME=str(market.config))

    def dante(*args: str, env: dict[str, str] = env) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dante", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=here,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    ran = await anyio.to_thread.run_sync(dante, "balance", "--json")
    assert ran.returncode == 0, ran.stderr
    assert '"wallet_id":"alice"' in ran.stdout.replace(" ", "")

    # The environment wins over the file: another user, who has no wallet here yet.
    other = {**env, "DANTE_USERNAME": "carol"}
    ran = await anyio.to_thread.run_sync(lambda: dante("balance", "--json", env=other))
    assert ran.returncode == 0, ran.stderr
    assert '"wallet_id":"carol"' in ran.stdout.replace(" ", "")

    # Without the file the same command has no platform to talk to.
    (here / ".env").rename(here / "saved.env")
    ran = await anyio.to_thread.run_sync(
        lambda: dante("balance", env={**env, "DANTE_NATS_URL": "nats://127.0.0.1:1"})
    )
    assert ran.returncode == 3, ran.stderr

    # A line that is not KEY=VALUE stops every command, naming the file and line.
    (here / ".env").write_text("DANTE_USERNAME=alice\nthis is not a setting\n")
    ran = await anyio.to_thread.run_sync(dante, "balance")
    assert ran.returncode == 2
    assert ".env:2: expected KEY=VALUE" in ran.stderr and "Traceback" not in ran.stderr
