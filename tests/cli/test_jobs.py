"""`dante jobs …` and the job shortcuts against a running platform and a simulated provider."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dante.agent.workspace import pack_results
from dante.cli.shortcuts import HELLO_SCRIPT
from dante.client.commands import new_command_id
from dante.client.transfer import fetch_input, send_output, upload_results
from dante.schemas import commands as cmd
from dante.schemas import dispatch
from dante.schemas import events as ev
from dante.schemas.money import cost
from dante.schemas.values import DockerPayload, ScriptPayload
from tests.cli.cli import run_dante
from tests.cli.conftest import Market
from tests.handlers.harness import DGPU, Agent, log_events

NOWHERE = "nats://127.0.0.1:1"


async def funded(market: Market, dgpu: int = 10) -> None:
    ran = await market.dante("chain", "faucet", str(dgpu))
    assert ran.code == 0, ran
    ran = await market.dante("wallet", "deposit", str(dgpu))
    assert ran.code == 0, ran


async def submit(market: Market, *args: str) -> str:
    ran = await market.dante("jobs", "submit", "--json", *args)
    assert ran.code == 0, ran
    await market.platform.settle()
    job_id: str = ran.json()["job_id"]
    return job_id


async def assignment(market: Market, job_id: str) -> dispatch.Assignment:
    found = [
        i
        for i in await market.agent.instructions()
        if isinstance(i, dispatch.Assignment) and i.job_id == job_id
    ]
    assert found, f"no assignment for {job_id}"
    return found[-1]


async def status(market: Market, job_id: str) -> dict[str, object]:
    ran = await market.dante("jobs", "status", job_id, "--json")
    assert ran.code == 0, ran
    document: dict[str, object] = ran.json()
    return document


def script(tmp_path: Path, text: str = "print('training')\n", name: str = "train.py") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.anyio
async def test_a_rental_from_submit_to_completion(market: Market, tmp_path: Path) -> None:
    await funded(market)
    ran = await market.dante(
        "jobs",
        "submit",
        "--script",
        str(script(tmp_path)),
        "--gpus",
        "2",
        "--name",
        "train",
        "--env",
        "EPOCHS=3",
        "--env",
        "LR=0.1",
        "--max-hours",
        "2",
        "--json",
        "--",
        "--data",
        "cifar10",
    )
    assert ran.code == 0, ran
    submitted = ran.json()
    job_id = submitted["job_id"]
    assert submitted["quote"]["provider_id"] == "prov-1"
    assert submitted["quote"]["total_udgpu"] == cost(2 * 500_000, 7_200_000)
    assert submitted["price_udgpu"] == 500_000 and submitted["available_now"] is True
    await market.platform.settle()

    given = await assignment(market, job_id)
    assert given.payload == ScriptPayload(
        script="print('training')\n",
        interpreter="python3",
        args=["--data", "cifar10"],
        env={"EPOCHS": "3", "LR": "0.1"},
    )
    assert (given.gpu_indices, given.max_duration_s, given.name) == ([0, 1], 7200, "train")
    assert (await status(market, job_id))["state"] == "assigned"

    await market.agent.start(job_id)
    market.clock.advance(10)
    await market.agent.tick(job_id, ms=5_000, gpus=2)
    await market.platform.settle()
    # The original client's `status ID` is the same view.
    ran = await market.dante("status", job_id, "--json")
    assert ran.code == 0, ran
    running = ran.json()
    assert {k: running[k] for k in ("job_id", "state", "provider_id", "gpus", "attempts")} == {
        "job_id": job_id,
        "state": "running",
        "provider_id": "prov-1",
        "gpus": 2,
        "attempts": 1,
    }
    assert running["charged_udgpu"] == cost(500_000, 10_000) and running["reason"] is None
    human = await market.dante("jobs", "status", job_id)
    assert f"job        {job_id} (train)" in human.out
    assert "state      running on prov-1, GPU 0, 1 (attempt 1)" in human.out

    waiter = asyncio.create_task(market.dante("jobs", "wait", job_id, "--json"))
    await asyncio.sleep(1)
    assert not waiter.done()
    await market.agent.finish(job_id, exit_code=0)
    waited = await asyncio.wait_for(waiter, 30)
    assert waited.code == 0, waited
    assert (waited.json()["state"], waited.json()["timed_out"]) == ("completed", False)

    listed = (await market.dante("jobs", "list", "--json")).json()["jobs"]
    assert [(j["job_id"], j["state"], j["charged_udgpu"]) for j in listed] == [
        (job_id, "completed", cost(500_000, 10_000))
    ]
    table = (await market.dante("jobs", "list")).out.splitlines()
    assert table[0].split() == ["JOB", "NAME", "STATE", "GPUS", "PROVIDER", "SUBMITTED", "CHARGED"]
    assert table[1].split()[:5] == [job_id, "train", "completed", "2", "prov-1"]


@pytest.mark.anyio
async def test_wait_exit_codes_and_cancel(market: Market, tmp_path: Path) -> None:
    await funded(market)
    failing = await submit(market, "--image", "python:3.12", "--", "python", "-c", "exit(3)")
    given = await assignment(market, failing)
    assert given.payload == DockerPayload(image="python:3.12", command=["python", "-c", "exit(3)"])
    await market.agent.start(failing)

    ran = await market.dante("jobs", "wait", failing, "--timeout", "0.5")
    assert ran.code == 4, ran
    assert f"job {failing} is still running on prov-1" in ran.out

    await market.agent.finish(failing, exit_code=3)
    ran = await market.dante("jobs", "wait", failing, "--json")
    assert ran.code == 1, ran
    ended = ran.json()
    assert (ended["state"], ended["exit_code"]) == ("failed", 3)
    assert "3" in ended["reason"]

    # Two jobs for both GPUs: the second waits in the queue, and cancelling it ends it now.
    running = await submit(market, "--script", str(script(tmp_path)), "--gpus", "2")
    queued = await submit(market, "--script", str(script(tmp_path)), "--gpus", "2")
    assert (await status(market, queued))["state"] == "queued"
    ran = await market.dante("jobs", "cancel", queued)
    assert ran.code == 0 and ran.out.strip() == f"Cancelled job {queued}.", ran
    ran = await market.dante("jobs", "wait", queued)
    assert ran.code == 1 and "cancelled" in ran.out
    cancelled = await status(market, queued)
    assert (cancelled["state"], cancelled["reason"]) == ("cancelled", "cancelled by the renter")

    # A running one is stopped by its provider.
    await market.agent.start(running)
    ran = await market.dante("jobs", "cancel", running, "--reason", "wrong data")
    assert ran.code == 0, ran
    assert f"Asked the provider to stop job {running}" in ran.out
    assert "Billed: its GPU time until now, plus at most 10 s while it stops" in ran.out

    ran = await market.dante("jobs", "cancel", failing, "--json")
    assert ran.code == 1
    assert ran.json()["error"]["code"] == "job_finished"
    ran = await market.dante("jobs", "status", "job-nope")
    assert ran.code == 1
    assert ran.err.strip() == (
        "error: you have no job job-nope; list your jobs with `dante jobs list`"
    )
    ran = await market.dante("jobs", "status", failing, user="mallory")
    assert ran.code == 1
    assert ran.err.strip() == (
        f"error: you have no job {failing}; list your jobs with `dante jobs list`"
    )


@pytest.mark.anyio
async def test_logs_and_results(market: Market, tmp_path: Path) -> None:
    await funded(market)
    job_id = await submit(market, "--script", str(script(tmp_path)))
    await market.agent.start(job_id)
    at = datetime.now(UTC)
    await send_output(
        market.agent.client,
        "prov-1",
        job_id,
        1,
        [
            cmd.OutputLine(at=at, stream="stdout", text="epoch 1 loss 0.9"),
            cmd.OutputLine(at=at, stream="stderr", text="warning: slow disk"),
        ],
    )
    ran = await market.dante("jobs", "logs", job_id, "--no-platform")
    assert ran.code == 0, ran
    assert (ran.out, ran.err) == ("epoch 1 loss 0.9\n", "warning: slow disk\n")
    page = (await market.dante("jobs", "logs", job_id, "--json", "--no-platform")).json()
    assert [(line["stream"], line["text"]) for line in page["lines"]] == [
        ("stdout", "epoch 1 loss 0.9"),
        ("stderr", "warning: slow disk"),
    ]
    assert page["ended"] is False

    follower = asyncio.create_task(
        market.dante("jobs", "logs", job_id, "--follow", "--no-platform")
    )
    with_platform = asyncio.create_task(market.dante("jobs", "logs", job_id, "--follow"))
    await asyncio.sleep(1.5)
    await send_output(
        market.agent.client,
        "prov-1",
        job_id,
        1,
        [cmd.OutputLine(at=at, stream="stdout", text="epoch 2 loss 0.5")],
    )
    (tmp_path / "work" / "out" / "plots").mkdir(parents=True)
    (tmp_path / "work" / "out" / "model.pt").write_bytes(b"weights" * 1000)
    (tmp_path / "work" / "out" / "plots" / "loss.csv").write_text("1,0.9\n2,0.5\n")
    packed = pack_results(tmp_path / "work", tmp_path / "results.tar.gz")
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
    followed = await asyncio.wait_for(follower, 30)
    assert followed.code == 0, followed
    assert followed.out == "epoch 1 loss 0.9\nepoch 2 loss 0.5\n"
    followed = await asyncio.wait_for(with_platform, 30)
    assert followed.out == "epoch 1 loss 0.9\nepoch 2 loss 0.5\n"
    # How it ended comes last, once the job has.
    assert followed.err.splitlines()[-1] == "[dante] completed (exit code 0)", followed
    assert "[dante] started" in followed.err.splitlines()

    out = tmp_path / "got"
    ran = await market.dante("jobs", "results", job_id, "--out", str(out), "--json")
    assert ran.code == 0, ran
    fetched = ran.json()
    assert (fetched["sha256"], fetched["size"]) == (ref.sha256, ref.size)
    assert (out / "model.pt").read_bytes() == b"weights" * 1000
    assert (out / "plots" / "loss.csv").read_text() == "1,0.9\n2,0.5\n"
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "plots"]

    # Nothing is overwritten.
    ran = await market.dante("jobs", "results", job_id, "--out", str(out))
    assert ran.code == 2 and "would be overwritten" in ran.err
    ran = await market.dante("jobs", "results", job_id, "--out", str(tmp_path / "a"), "--archive")
    assert ran.code == 0, ran
    assert (tmp_path / "a" / f"{job_id}-results.tar.gz").stat().st_size == ref.size

    other = await submit(market, "--script", str(script(tmp_path)))
    ran = await market.dante("jobs", "results", other, "--out", str(tmp_path / "b" / "c"))
    assert ran.code == 1 and "has no results yet" in ran.err
    ran = await market.dante("jobs", "results", "job-nope", "--out", str(tmp_path / "d"))
    assert ran.code == 1 and "you have no job job-nope" in ran.err
    # Neither left a folder behind; a folder that was there already stays.
    assert not (tmp_path / "b").exists() and not (tmp_path / "d").exists()
    ran = await market.dante("jobs", "results", "job-nope", "--out", str(tmp_path / "a"))
    assert ran.code == 1 and (tmp_path / "a" / f"{job_id}-results.tar.gz").exists()


@pytest.mark.anyio
async def test_inputs_are_uploaded_and_given_to_the_job(market: Market, tmp_path: Path) -> None:
    await funded(market)
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "train" / "a.csv").write_text("x,y\n1,2\n")
    (data / "labels.txt").write_text("cat\ndog\n")
    config = tmp_path / "config.yaml"
    config.write_bytes(b"lr: 0.1\n" * 100_000)  # 800 kB: two chunks
    job_id = await submit(
        market, "--script", str(script(tmp_path)), "--input", str(config), "--input", str(data)
    )
    given = await assignment(market, job_id)
    assert sorted(ref.path for ref in given.inputs) == [
        "config.yaml",
        "data/labels.txt",
        "data/train/a.csv",
    ]
    for ref in given.inputs:
        dest = tmp_path / "fetched" / ref.path.replace("/", "_")
        dest.parent.mkdir(exist_ok=True)
        await fetch_input(market.agent.client, "prov-1", job_id, ref, dest)
        local = config if ref.path == "config.yaml" else data / ref.path.removeprefix("data/")
        assert dest.read_bytes() == local.read_bytes()


@pytest.mark.anyio
async def test_submit_needs_funds_and_the_shortcut_has_defaults(
    market: Market, tmp_path: Path
) -> None:
    ran = await market.dante("jobs", "submit", "--script", str(script(tmp_path)))
    assert ran.code == 1, ran
    assert ran.err.startswith("error: this job needs 0.083333 dGPU held before it starts")
    assert ran.err.strip().endswith("add funds with `dante wallet deposit AMOUNT`")

    await funded(market, 1)
    ran = await market.dante("submit", "hello", "--json")
    assert ran.code == 0, ran
    job_id = ran.json()["job_id"]
    await market.platform.settle()
    given = await assignment(market, job_id)
    assert given.payload == ScriptPayload(script=HELLO_SCRIPT, interpreter="python3")
    assert (given.name, given.max_duration_s, len(given.gpu_indices)) == ("hello", 3600, 1)
    assert market.platform.tail.world.wallet("alice").available < DGPU


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--script", "{script}", "--env", "NOEQUALS"], "--env 'NOEQUALS' is not NAME=VALUE"),
        (["--script", "{script}", "--env", "1X=2"], "'1X' is not a variable name"),
        (["--script", "{script}", "--env", "A=1", "--env", "A=2"], "--env A is given twice"),
        (["--script", "{big}"], "may be at most 1,048,576 bytes (1 MiB)"),
        (["--script", "{missing}"], "No such file"),
        (["--script", "{script}", "--image", "ubuntu"], "either --script FILE or --image IMAGE"),
        ([], "either --script FILE or --image IMAGE"),
        (["--image", "ubuntu", "--interpreter", "bash"], "--interpreter is for --script jobs"),
        (["--image", "bad image!"], "is not a Docker image reference"),
        (["--script", "{script}", "--input", "{missing}"], "no such file or folder"),
        (["--script", "{script}", "--max-hours", "0"], "--max-hours '0' must be a positive"),
        (["--script", "{script}", "--gpus", "65"], "--gpus must be between 1 and 64"),
        (["--script", "{script}", "--interpreter", "ruby"], 'Invalid value "ruby"'),
    ],
)
def test_submit_refuses_bad_usage_before_sending_anything(
    tmp_path: Path, args: list[str], why: str
) -> None:
    paths = {
        "script": str(script(tmp_path)),
        "big": str(script(tmp_path, "#" * (1024 * 1024 + 1), "big.py")),
        "missing": str(tmp_path / "missing.py"),
    }
    filled = [arg.format(**paths) for arg in args]
    # Refused before connecting: nothing answers there, which would be exit code 3.
    ran = run_dante("jobs", "submit", *filled, url=NOWHERE, user="alice")
    assert ran.code == 2, ran
    assert ran.err.startswith("error: ") and why in ran.err, ran
    assert len(ran.err.strip().splitlines()) == 1


@pytest.mark.anyio
async def test_submit_prints_the_hold_it_takes_not_an_offline_offer(
    market: Market, tmp_path: Path
) -> None:
    cheap = Agent(market.nc, "carol", "prov-cheap")
    await cheap.register(price=250_000)  # half prov-1's price, but about to go offline
    market.clock.advance(31)
    await market.agent.beat(market.platform, market.clock)
    await market.platform.tick()
    await market.platform.settle()
    assert market.platform.tail.world.provider("prov-cheap").status == "offline"
    await funded(market)
    ran = await market.dante("jobs", "submit", "--script", str(script(tmp_path)), "--gpus", "1")
    assert ran.code == 0, ran
    await market.platform.settle()
    held = [e for e in await log_events(market.platform.store) if isinstance(e, ev.FundsHeld)]
    assert [h.amount for h in held] == [cost(500_000, 600_000)]
    assert "1 GPU(s) on prov-1, free now" in ran.out
    assert re.search(r"held at start +0\.083333 dGPU\n", ran.out), ran.out
    assert "if cancelled         up to the cancel, plus at most 10 s" in ran.out


@pytest.mark.anyio
async def test_logs_show_the_platform_lines_in_time_order_and_since(
    market: Market, tmp_path: Path
) -> None:
    from datetime import timedelta

    await funded(market)
    t0 = market.clock.now
    job_id = await submit(market, "--script", str(script(tmp_path)))
    await market.agent.start(job_id)
    lines = [
        cmd.OutputLine(at=t0 + timedelta(seconds=30), stream="stdout", text="epoch 1"),
        cmd.OutputLine(at=t0 + timedelta(seconds=90), stream="stdout", text="epoch 2"),
    ]
    await send_output(market.agent.client, "prov-1", job_id, 1, lines)
    market.clock.advance(60)
    assert (await market.dante("jobs", "cancel", job_id)).code == 0
    market.clock.advance(60)
    await market.agent.finish(job_id, exit_code=143)
    await market.platform.settle()

    ran = await market.dante("jobs", "logs", job_id, "--json")
    assert ran.code == 0, ran
    document = ran.json()
    seen = [(line["source"], line["event"] or line["text"]) for line in document["lines"]]
    assert seen[:2] == [("platform", "JobSubmitted"), ("platform", "JobAssigned")]
    assert seen[-5:] == [
        ("platform", "JobStarted"),
        ("job", "epoch 1"),
        ("platform", "JobCancelRequested"),
        ("job", "epoch 2"),
        ("platform", "JobCancelled"),
    ]
    platform = [line for line in document["lines"] if line["source"] == "platform"]
    assert all(line["stream"] is None and line["seq"] > 0 for line in platform)
    assert "cancel requested by alice" in [line["text"] for line in platform]

    # In a terminal: the job's stdout untouched, the platform's lines on stderr, marked.
    ran = await market.dante("jobs", "logs", job_id)
    assert ran.out == "epoch 1\nepoch 2\n"
    marked = ran.err.splitlines()
    assert marked and all(line.startswith("[dante] ") for line in marked), ran.err
    assert marked[-2:] == [
        "[dante] cancel requested by alice",
        "[dante] cancelled: cancelled by the renter",
    ]

    since = (t0 + timedelta(seconds=45)).isoformat()
    ran = await market.dante("jobs", "logs", job_id, "--since", since, "--json")
    assert [line["text"] for line in ran.json()["lines"]] == [
        "cancel requested by alice",
        "epoch 2",
        "cancelled: cancelled by the renter",
    ]
    # A duration counts back from now: the test's events are from long ago.
    ran = await market.dante("jobs", "logs", job_id, "--since", "10m", "--json")
    assert ran.code == 0 and ran.json()["lines"] == [], ran
    ran = await market.dante("jobs", "logs", job_id, "--since", "yesterday")
    assert ran.code == 2 and "--since 'yesterday' is neither a duration" in ran.err
