"""`dante` with no arguments in a terminal: one full rental through the interactive menu."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from dante.handlers.transfer import send_output
from dante.schemas import commands as cmd
from tests.cli.cli import clean_env
from tests.cli.conftest import Market
from tests.cli.terminal import Terminal

pytestmark = pytest.mark.anyio


async def output(market: Market, job_id: str, *texts: str) -> None:
    at = datetime.now(UTC)
    lines = [cmd.OutputLine(at=at, stream="stdout", text=text) for text in texts]
    await send_output(market.agent.client, "prov-1", job_id, 1, lines)


async def test_a_rental_through_the_menu(market: Market, tmp_path: Path) -> None:
    train = tmp_path / "train.py"
    train.write_text("print('step 1')\n")
    term = Terminal(
        [sys.executable, "-m", "dante"],
        clean_env(
            DANTE_NATS_URL=market.url,
            DANTE_USERNAME="alice",
            COLUMNS="120",
            XDG_CONFIG_HOME=str(market.config),
        ),
    )

    async def expect(text: str, timeout: float = 30) -> str:
        return await anyio.to_thread.run_sync(lambda: term.expect(text, timeout))

    async def answer(prompt: str, reply: str) -> str:
        seen = await expect(prompt)
        term.send(reply)
        return seen

    try:
        assert "Dante: rent a GPU. Platform at" in await expect("Choose: ")
        term.send("1")  # list providers
        assert "prov-1" in await answer("Choose: ", "2")  # then check the balance
        assert "total      0.00 dGPU" in await expect("Choose: ")

        term.send("4")  # submit a custom script
        await answer("Script file: ", str(tmp_path / "nope.py"))
        await answer("is not a file\nScript file: ", str(train))
        await answer("Interpreter (python3 or bash) [python3]: ", "")
        await answer("Arguments for it [-]: ", "--fast")
        await answer("How many GPUs [1]: ", "none")
        await answer("a whole number from 1 to 64, please\nHow many GPUs [1]: ", "2")
        await answer("GPU model or family (e.g. RTX 4090, A100) [any]: ", "RTX 4090")
        await answer("Stop it after how many hours [1]: ", "0.5")
        await answer("Name it [train]: ", "")
        quoted = await answer("Submit it? [y]: ", "y")
        assert "2 GPU(s) on prov-1, free now" in quoted
        assert "total                0.50 dGPU" in quoted
        refused = await answer("Deposit now and submit again? [y]: ", "")
        assert "error: this job needs 0.5 dGPU held before it starts" in refused
        await answer("Amount to deposit, in dGPU [10]: ", "0.0000001")
        await answer("more than 6 decimals", "")
        submitted = await expect("Choose: ")
        assert "Deposited 10.00 dGPU into alice." in submitted
        found = re.search(r"Submitted job (job-[0-9a-f]+) \(python3 script\)", submitted)
        assert found, submitted
        job_id = found[1]
        await market.platform.settle()

        await market.agent.start(job_id)
        await output(market, job_id, "step 1")
        term.send("5")  # job status, of the job just submitted by default
        await answer(f"Job id [{job_id}]: ", "")
        assert "running on prov-1, GPU 0, 1 (attempt 1)" in await expect("Choose: ")

        term.send("6")  # follow the logs until the job ends
        await answer(f"Job id [{job_id}]: ", "")
        await expect("step 1")
        await output(market, job_id, "step 2", "done")
        await market.agent.finish(job_id, exit_code=0)
        followed = await expect("Choose: ")
        assert f"step 2\ndone\njob {job_id} completed (exit code 0)\n" in followed

        term.send("7")  # cancel: too late, and the menu says so and goes on
        await answer(f"Job id [{job_id}]: ", "")
        await answer(f"Cancel {job_id}? [n]: ", "y")
        assert f"error: job {job_id} has already ended (completed)" in await expect("Choose: ")

        term.send("2")  # nothing ran long enough to be charged: the hold came back whole
        assert "available  10.00 dGPU\nheld        0.00 dGPU" in await expect("Choose: ")
        term.send("0")
        assert await anyio.to_thread.run_sync(term.wait) == 0
    finally:
        term.close()
    world = market.platform.tail.world
    assert world.job(job_id).status == "completed"
    assert world.wallet("alice").deposited == 10_000_000
