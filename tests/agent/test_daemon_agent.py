"""The daemon in-process against a real platform on a real nats-server: jobs, stops, declines,
inputs, duplicate instructions. (The command line, crashes and signals: test_daemon_e2e.)"""

from __future__ import annotations

import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from dante.agent.config import AgentOptions, load_config
from dante.agent.daemon import JOURNAL_FILE, Agent, Machine
from dante.agent.gpus import parse_simulate
from dante.agent.identity import provider_id_for
from dante.agent.journal import Journal
from dante.client import transfer
from dante.events.natsd import NatsServer
from dante.events.subjects import DISPATCH_STREAM, dispatch_subject
from dante.platform import Platform, PlatformOptions
from dante.schemas import events as ev
from dante.schemas.dispatch import Stop
from dante.schemas.results import LogPage
from tests.agent.daemon_helpers import (
    SIMULATE,
    Renter,
    check_usage,
    ended,
    events_of,
    history,
    settled,
    wait_for,
)
from tests.factories import SOLANA

pytestmark = pytest.mark.anyio


@pytest.fixture
async def platform(nc: NATS, tmp_path: Path) -> AsyncIterator[Platform]:
    plat = Platform(nc, PlatformOptions(data_dir=tmp_path / "platform"))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(plat.run)
        with anyio.fail_after(30):
            await plat.ready.wait()
        yield plat
        tasks.cancel_scope.cancel()


class Running:
    """An agent serving in the background, with its own connection."""

    def __init__(self, agent: Agent, nc: NATS, journal: Journal) -> None:
        self.agent = agent
        self.nc = nc
        self.journal = journal
        self.stopping = anyio.Event()
        self.stopped = anyio.Event()

    @property
    def provider_id(self) -> str:
        return self.agent.machine.provider_id

    async def run(self) -> None:
        try:
            await self.agent.run(self.stopping)
        finally:
            self.stopped.set()


@pytest.fixture
async def start_agent(
    nats_server: NatsServer, platform: Platform, tmp_path: Path
) -> AsyncIterator[object]:
    del platform
    started: list[Running] = []
    async with anyio.create_task_group() as tasks:

        async def start(**options: object) -> Running:
            config = load_config(
                AgentOptions(
                    executor="script",
                    work_dir=tmp_path / f"agent{len(started)}",
                    tick_seconds=0.5,
                    stop_grace=2,
                    **options,  # type: ignore[arg-type]
                ),
                {"DANTE_USERNAME": "bob", "SOLANA_WALLET_ADDRESS": SOLANA},
                None,
            )
            config.work_dir.mkdir(parents=True)
            gpus = parse_simulate(config.simulate or SIMULATE)
            machine = Machine(
                config=config,
                gpus=tuple(gpus),
                provider_id=provider_id_for(config.work_dir, "bob"),
            )
            journal = Journal(config.work_dir / JOURNAL_FILE)
            nc = await nats.connect(nats_server.url)
            running = Running(Agent(machine, nc, journal), nc, journal)
            started.append(running)
            tasks.start_soon(running.run)
            with anyio.fail_after(20):
                await running.agent.ready.wait()
            return running

        yield start
        with anyio.fail_after(90):
            for running in started:
                running.stopping.set()
            for running in started:
                await running.stopped.wait()
    for running in started:
        await running.nc.close()
        running.journal.close()


async def test_a_script_job_runs_is_metered_and_its_output_and_results_arrive(
    nc: NATS, start_agent: object, tmp_path: Path
) -> None:
    agent: Running = await start_agent()  # type: ignore[operator]
    renter = Renter(nc)
    await renter.deposit()
    job_id = await renter.submit(
        "import os, time\n"
        "print('hello from the GPU', flush=True)\n"
        "print('visible:', os.environ['CUDA_VISIBLE_DEVICES'], flush=True)\n"
        "time.sleep(1.6)\n"
        "open(os.environ['DANTE_OUTPUT_DIR'] + '/answer.txt', 'w').write('42')\n"
    )
    world = await wait_for(nc, settled(job_id), what="the job to complete and be billed")
    job = world.job(job_id)
    assert (job.status, job.exit_code, job.attempt) == ("completed", 0, 1)
    records = await history(nc)
    assert check_usage(records, job_id, job.price) > 0
    (usage,) = {e.attempt for e in events_of(records, ev.UsageRecorded, job_id)}
    assert usage == 1
    assert world.wallet("bob").earned > 0

    client = Renter(nc).client
    page = await transfer.read_logs(client, job_id)
    assert isinstance(page, LogPage)
    assert [line.text for line in page.lines] == ["hello from the GPU", "visible: 0"]
    dest = tmp_path / "results.tar.gz"
    await transfer.download_results(client, job_id, dest)
    with tarfile.open(dest) as archive:
        member = archive.extractfile("answer.txt")
        assert member is not None and member.read() == b"42"

    record = agent.journal.get((job_id, 1))
    assert record is not None and record.phase == "reported"
    assert [state for _, state in agent.journal.ticks((job_id, 1))] == ["sent"] * len(
        agent.journal.ticks((job_id, 1))
    )
    with anyio.fail_after(10):
        while (agent.agent.machine.jobs_dir / job_id).exists():
            await anyio.sleep(0.05)  # the job's folder is deleted once reported


async def test_a_cancel_stops_the_job_at_once_and_keeps_its_results(
    nc: NATS, start_agent: object, tmp_path: Path
) -> None:
    await start_agent()  # type: ignore[operator]
    renter = Renter(nc)
    await renter.deposit()
    job_id = await renter.submit(
        "import os, time\n"
        "open(os.environ['DANTE_OUTPUT_DIR'] + '/partial.txt', 'w').write('half')\n"
        "print('working', flush=True)\n"
        "time.sleep(120)\n"
    )
    await wait_for(nc, lambda w: w.job(job_id).status == "running", what="the job to start")
    await anyio.sleep(1)
    asked = time.monotonic()
    await renter.cancel(job_id)
    world = await wait_for(nc, ended(job_id), what="the job to be cancelled")
    assert time.monotonic() - asked < 15  # the stop reached it, not its two minutes
    job = world.job(job_id)
    assert job.status == "cancelled"
    assert job.results is not None
    dest = tmp_path / "r.tar.gz"
    await transfer.download_results(renter.client, job_id, dest)
    with tarfile.open(dest) as archive:
        assert "partial.txt" in archive.getnames()


async def test_a_stopped_job_is_told_why_before_its_sigterm(
    nc: NATS, start_agent: object, tmp_path: Path
) -> None:
    await start_agent()  # type: ignore[operator]
    renter = Renter(nc)
    await renter.deposit()
    job_id = await renter.submit(
        "import os, shutil, signal, sys, time\n"
        "out = os.environ['DANTE_OUTPUT_DIR']\n"
        "def stopping(signum, frame):\n"
        "    shutil.copy(os.environ['DANTE_STOP_FILE'], out + '/why.txt')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stopping)\n"
        "ids = [os.environ[k] for k in ('DANTE_JOB_ID', 'DANTE_ATTEMPT', 'DANTE_GPU_COUNT')]\n"
        "open(out + '/ids.txt', 'w').write(' '.join(ids))\n"
        "print('working', flush=True)\n"
        "time.sleep(120)\n"
    )
    await wait_for(nc, lambda w: w.job(job_id).status == "running", what="the job to start")
    await anyio.sleep(1)
    await renter.cancel(job_id)
    await wait_for(nc, ended(job_id), what="the job to be cancelled")
    dest = tmp_path / "r.tar.gz"
    await transfer.download_results(renter.client, job_id, dest)
    with tarfile.open(dest) as archive:
        why, ids = (archive.extractfile(name) for name in ("why.txt", "ids.txt"))
        assert why is not None and ids is not None
        assert why.read().decode().startswith("cancelled")
        assert ids.read().decode() == f"{job_id} 1 1"


async def test_beyond_max_jobs_assignments_are_declined(nc: NATS, start_agent: object) -> None:
    agent: Running = await start_agent(max_jobs=1)  # type: ignore[operator]
    renter = Renter(nc)
    await renter.deposit()
    first = await renter.submit("import time; time.sleep(120)")
    await wait_for(nc, lambda w: w.job(first).status == "running", what="the first job")
    second = await renter.submit("print(2)")
    with anyio.fail_after(30):
        while not (declined := events_of(await history(nc), ev.JobDeclined, second)):
            await anyio.sleep(0.2)
    assert declined[0].reason == "this provider runs at most 1 job(s) at once"
    record = agent.journal.get((second, 1))
    assert record is not None and record.phase == "declined"
    await renter.cancel(first)
    await wait_for(nc, lambda w: w.job(first).ended, what="the first job to end")


async def test_inputs_are_fetched_into_the_job_folder(
    nc: NATS, start_agent: object, tmp_path: Path
) -> None:
    await start_agent()  # type: ignore[operator]
    renter = Renter(nc)
    await renter.deposit()
    source = tmp_path / "data.csv"
    source.write_text("a,b\n1,2\n")
    ref = await transfer.upload_input(renter.client, source, "data/in.csv")
    job_id = await renter.submit(
        "print(open('data/in.csv').read().splitlines()[-1], flush=True)", inputs=[ref]
    )
    world = await wait_for(nc, ended(job_id), what="the job")
    assert world.job(job_id).status == "completed", world.job(job_id).end_reason
    page = await transfer.read_logs(renter.client, job_id)
    assert [line.text for line in page.lines] == ["1,2"]


def witness(tmp_path: Path) -> Path:
    """A folder beside the agent's where a test's job leaves its marks. It exists before
    the job starts: script jobs may write into existing folders here, never create entries
    beside the agent's work folder (the sandbox grants that folder child by child)."""
    folder = tmp_path / "witness"
    folder.mkdir(exist_ok=True)
    return folder


async def test_an_instruction_delivered_again_is_not_acted_on_again(
    nc: NATS, start_agent: object, tmp_path: Path
) -> None:
    agent: Running = await start_agent()  # type: ignore[operator]
    runs = witness(tmp_path) / "runs.txt"
    renter = Renter(nc)
    await renter.deposit()
    job_id = await renter.submit(f"open({str(runs)!r}, 'a').write('ran\\n')")
    await wait_for(nc, ended(job_id), what="the job")
    # The same assignment again (as after a redelivery): journaled already, not run again.
    record = agent.journal.get((job_id, 1))
    assert record is not None
    again = msgspec.json.encode(record.assignment)
    subject = dispatch_subject("bob", agent.provider_id, job_id)
    await nc.jetstream().publish(subject, again, stream=DISPATCH_STREAM)
    await anyio.sleep(2)
    assert runs.read_text() == "ran\n"
    assert agent.journal.get((job_id, 1)).phase == "reported"  # type: ignore[union-attr]


async def test_a_revoked_attempt_is_stopped_and_not_reported(
    nc: NATS, start_agent: object, tmp_path: Path
) -> None:
    agent: Running = await start_agent()  # type: ignore[operator]
    renter = Renter(nc)
    await renter.deposit()
    marker = witness(tmp_path) / "ended.txt"
    job_id = await renter.submit(
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *_: (open({str(marker)!r}, 'w').write('term'),"
        " sys.exit(0)))\n"
        "time.sleep(120)\n"
    )
    await wait_for(nc, lambda w: w.job(job_id).status == "running", what="the job to start")
    # The platform took the attempt away (as when it requeues it): the agent stops the job
    # and says nothing more about it.
    stop = Stop(job_id=job_id, attempt=1, code="revoked", reason="moved elsewhere", seq=10**6)
    subject = dispatch_subject("bob", agent.provider_id, job_id)
    await nc.jetstream().publish(subject, msgspec.json.encode(stop), stream=DISPATCH_STREAM)
    with anyio.fail_after(20):
        while (record := agent.journal.get((job_id, 1))) is None or record.phase != "dropped":
            await anyio.sleep(0.05)
    assert marker.read_text() == "term"
    await anyio.sleep(1)
    world = await wait_for(nc, lambda w: True)
    assert world.job(job_id).status == "running"  # no finish report was sent
    assert not events_of(await history(nc), ev.JobCompleted, job_id)


async def test_simulated_telemetry_is_marked_in_statement_status_and_audit(
    nc: NATS, start_agent: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from dante.cli.audit import _print_human as print_audit
    from dante.cli.jobs import print_job
    from dante.cli.statement import _print_human as print_statement
    from dante.events.store import EventStore
    from dante.projections.audit.run import audit
    from dante.schemas.commands import GetJob, GetJobStatement

    await start_agent()  # type: ignore[operator]
    renter = Renter(nc)
    await renter.deposit()
    job_id = await renter.submit("import time\ntime.sleep(1.6)\n")
    await wait_for(nc, settled(job_id), what="the job to complete and be billed")

    # The usage events themselves say so, sample by sample.
    usage = events_of(await history(nc), ev.UsageRecorded, job_id)
    samples = [s for event in usage for tick in event.ticks for s in tick.samples]
    assert samples and all(s.simulated for s in samples)

    statement = await renter.client.ask(GetJobStatement(job_id=job_id))
    [attempt] = statement.attempts
    assert attempt.simulated
    print_statement(statement)
    shown = capsys.readouterr().out
    assert "simulated GPUs: the telemetry below was made up by the agent" in shown
    assert "(simulated)" in shown and "(simulated GPUs: telemetry not measured)" in shown

    job = await renter.client.ask(GetJob(job_id=job_id))
    assert job.simulated
    print_job(job)
    assert "(simulated GPUs: telemetry is made up, not measured)" in capsys.readouterr().out

    report = await audit(EventStore(nc))
    assert report.simulated.jobs >= 1 and report.simulated.ticks >= len(usage)
    assert report.simulated.unmarked_ticks == 0
    print_audit(report)
    assert "carry telemetry made up by the agent, not measured" in capsys.readouterr().out
