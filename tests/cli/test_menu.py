"""`dante` with no arguments in a terminal: one full rental through the interactive menu,
then its results and the money it moved."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from dante.agent.workspace import pack_results
from dante.client.commands import new_command_id
from dante.client.transfer import send_output, upload_results
from dante.schemas import commands as cmd
from tests.cli.cli import clean_env
from tests.cli.conftest import Market
from tests.cli.terminal import Terminal
from tests.cli.test_jobs import funded, script, submit

pytestmark = pytest.mark.anyio

#: The menu's numbers for the items these tests use.
DOWNLOAD_RESULTS = "10"
WALLET_HISTORY = "11"


async def output(market: Market, job_id: str, *texts: str) -> None:
    at = datetime.now(UTC)
    lines = [cmd.OutputLine(at=at, stream="stdout", text=text) for text in texts]
    await send_output(market.agent.client, "prov-1", job_id, 1, lines)


async def finish_with_results(
    market: Market, job_id: str, work: Path, files: dict[str, bytes]
) -> None:
    """The provider runs the job, which leaves `files` in its out/ folder, and it completes."""
    await market.agent.start(job_id)
    for name, data in files.items():
        (work / "out" / name).parent.mkdir(parents=True, exist_ok=True)
        (work / "out" / name).write_bytes(data)
    packed = pack_results(work, work.with_name(f"{work.name}-results.tar.gz"))
    ref = await upload_results(market.agent.client, "prov-1", job_id, 1, packed.path)
    await market.agent.client.send(
        cmd.ReportJobFinished(
            command_id=new_command_id(),
            provider_id="prov-1",
            job_id=job_id,
            attempt=1,
            exit_code=0,
            results=ref,
        )
    )
    await market.platform.settle()


class Menu:
    """The menu on a terminal, answered like a person would."""

    def __init__(self, term: Terminal) -> None:
        self.term = term

    async def expect(self, text: str, timeout: float = 30) -> str:
        return await anyio.to_thread.run_sync(lambda: self.term.expect(text, timeout))

    def send(self, line: str) -> None:
        self.term.send(line)

    async def answer(self, prompt: str, reply: str) -> str:
        seen = await self.expect(prompt)
        self.send(reply)
        return seen

    async def leave(self) -> None:
        """Choose Exit, at the menu's prompt just read."""
        self.send("0")
        assert await anyio.to_thread.run_sync(self.term.wait) == 0


@asynccontextmanager
async def menu(market: Market, user: str = "alice") -> AsyncIterator[Menu]:
    term = Terminal(
        [sys.executable, "-m", "dante"],
        clean_env(
            DANTE_NATS_URL=market.url,
            DANTE_USERNAME=user,
            COLUMNS="120",
            XDG_CONFIG_HOME=str(market.config),
            SOLANA_KEYPAIR=str(market.config / "solana" / f"{user}.json"),
        ),
    )
    try:
        yield Menu(term)
    finally:
        term.close()


async def test_a_rental_through_the_menu(market: Market, tmp_path: Path) -> None:
    train = tmp_path / "train.py"
    train.write_text("print('step 1')\n")
    async with menu(market) as m:
        assert "Dante: rent a GPU. Platform at" in await m.expect("Choose: ")
        m.send("1")  # list providers
        assert "prov-1" in await m.answer("Choose: ", "2")  # then check the balance
        assert "total      0.00 dGPU" in await m.expect("Choose: ")

        m.send("4")  # submit a custom script
        await m.answer("Script file: ", str(tmp_path / "nope.py"))
        await m.answer("is not a file\nScript file: ", str(train))
        await m.answer("Interpreter (python3 or bash) [python3]: ", "")
        await m.answer("Arguments for it [-]: ", "--fast")
        await m.answer("How many GPUs [1]: ", "none")
        await m.answer("a whole number from 1 to 64, please\nHow many GPUs [1]: ", "2")
        await m.answer("GPU model or family (e.g. RTX 4090, A100) [any]: ", "RTX 4090")
        await m.answer("Stop it after how many hours [1]: ", "0.5")
        await m.answer("Name it [train]: ", "")
        quoted = await m.answer("Submit it? [y]: ", "y")
        assert "2 GPU(s) on prov-1, free now" in quoted
        assert "total                0.50 dGPU" in quoted
        refused = await m.answer("Deposit now and submit again? [y]: ", "")
        assert "error: this job needs 0.5 dGPU held before it starts" in refused
        await m.answer("Amount to deposit, in dGPU [10]: ", "0.0000001")
        await m.answer("more than 6 decimals", "")
        submitted = await m.expect("Choose: ")
        assert "the local chain's faucet gave it 10.00 test dGPU" in submitted
        assert "Deposited 10.00 dGPU into alice (transaction " in submitted
        found = re.search(r"Submitted job (job-[0-9a-f]+) \(python3 script\)", submitted)
        assert found, submitted
        job_id = found[1]
        await market.platform.settle()

        await market.agent.start(job_id)
        await output(market, job_id, "step 1")
        m.send("5")  # job status, of the job just submitted by default
        await m.answer(f"Job id [{job_id}]: ", "")
        assert "running on prov-1, GPU 0, 1 (attempt 1)" in await m.expect("Choose: ")

        m.send("6")  # follow the logs until the job ends
        await m.answer(f"Job id [{job_id}]: ", "")
        await m.expect("step 1")
        await output(market, job_id, "step 2", "done")
        await market.agent.finish(job_id, exit_code=0)
        followed = await m.expect("Choose: ")
        assert f"step 2\ndone\njob {job_id} completed (exit code 0)\n" in followed

        m.send("7")  # cancel: too late, and the menu says so and goes on
        await m.answer(f"Job id [{job_id}]: ", "")
        await m.answer(f"Cancel {job_id}? [n]: ", "y")
        assert f"error: job {job_id} has already ended (completed)" in await m.expect("Choose: ")

        m.send("2")  # nothing ran long enough to be charged: the hold came back whole
        assert "available  10.00 dGPU\nheld        0.00 dGPU" in await m.expect("Choose: ")
        await m.leave()
    world = market.platform.tail.world
    assert world.job(job_id).status == "completed"
    assert world.wallet("alice").deposited == 10_000_000


async def test_results_are_downloaded_through_the_menu(
    market: Market, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await funded(market)
    job_id = await submit(market, "--script", str(script(tmp_path)))
    files = {"model.pt": b"weights" * 1000, "plots/loss.csv": b"1,0.9\n2,0.5\n"}
    await finish_with_results(market, job_id, tmp_path / "work", files)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)  # the menu's working folder, where the default folder goes

    async with menu(market) as m:
        await m.answer("Choose: ", DOWNLOAD_RESULTS)
        await m.answer(f"Job id [{job_id}]: ", "")  # the latest job, as for status and logs
        got = await m.answer(f"Folder to put them in [results/{job_id}]: ", "")
        unpacked = await m.expect("Choose: ")
        assert (
            f"Unpacked the results of {job_id} into results/{job_id}/ (3 entries):\n"
            "  model.pt\n  plots\n  plots/loss.csv\n"
        ) in unpacked, got + unpacked
        out = here / "results" / job_id
        assert (out / "model.pt").read_bytes() == b"weights" * 1000
        assert (out / "plots" / "loss.csv").read_text() == "1,0.9\n2,0.5\n"
        assert sorted(p.name for p in out.iterdir()) == ["model.pt", "plots"]

        # Again into the same folder: nothing is overwritten, and the menu goes on.
        m.send(DOWNLOAD_RESULTS)
        await m.answer(f"Job id [{job_id}]: ", "")
        await m.answer("Folder to put them in ", str(out / "model.pt"))
        await m.answer(f"{out / 'model.pt'} is a file, not a folder\nFolder", str(out))
        refused = await m.expect("Choose: ")
        assert f"error: {out / 'model.pt'} exists and would be overwritten" in refused
        assert (out / "model.pt").read_bytes() == b"weights" * 1000
        await m.leave()


async def test_results_of_a_job_with_none_or_no_such_job(market: Market, tmp_path: Path) -> None:
    await funded(market)
    job_id = await submit(market, "--script", str(script(tmp_path)))
    failed = await submit(market, "--script", str(script(tmp_path)))
    await market.agent.start(failed)
    await market.agent.finish(failed, exit_code=1)
    await market.platform.settle()
    folder = tmp_path / "deep" / "results"

    async with menu(market) as m:
        await m.expect("Choose: ")
        for job, why in [
            (job_id, f"error: job {job_id} has no results yet: it is assigned"),
            (failed, f"error: job {failed} ended (failed) without results"),
            ("job-nope", "error: you have no job job-nope; list your jobs with `dante jobs list`"),
        ]:
            m.send(DOWNLOAD_RESULTS)
            await m.answer("Job id ", job)
            await m.answer("Folder to put them in ", str(folder))
            assert why in await m.expect("Choose: ")
            assert not (tmp_path / "deep").exists()  # no folder is left for nothing
        await m.leave()


async def test_the_wallet_history_through_the_menu(market: Market, tmp_path: Path) -> None:
    async with menu(market) as m:
        await m.answer("Choose: ", WALLET_HISTORY)
        assert "No money has moved in this wallet yet." in await m.expect("Choose: ")

        await funded(market)
        job_id = await submit(market, "--script", str(script(tmp_path)))
        await market.agent.start(job_id)
        market.clock.advance(360)
        await market.agent.tick(job_id, ms=360_000)  # 6 minutes of one GPU: 0.05 dGPU
        await market.agent.finish(job_id, exit_code=0)
        await market.platform.settle()

        m.send(WALLET_HISTORY)
        shown = await m.expect("Choose: ")
        await m.leave()
    rows = [line.split()[3:] for line in shown.splitlines() if job_id in line or "deposit" in line]
    # The deposit names its transaction on chain.
    *rows[-1], signature = rows[-1]
    assert len(signature) >= 64
    # Newest first: the deposit, the hold placed with the job, the charge for the minutes it
    # ran and the hold topped up again after it, then all that was held coming back.
    assert rows == [
        ["release", "0.116666", "+0.116666", "-0.116666", job_id],
        ["hold", "0.083333", "-0.083333", "+0.083333", job_id],
        ["charge", "0.05", "-0.05", job_id],
        ["hold", "0.083333", "-0.083333", "+0.083333", job_id],
        ["deposit", "10.00", "+10.00"],
    ]
    # The very table `dante wallet history` prints.
    verb = await market.dante("wallet", "history")
    assert verb.code == 0, verb
    assert verb.out in shown
