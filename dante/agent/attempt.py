"""One job attempt on this machine, from its assignment until the platform has its outcome.

Two tasks per attempt. The runner takes it through its phases (accept, fetch inputs, run,
meter) and journals each before acting on it. The reporter sends, in order, what the platform
must learn: that the job started, its usage ticks, its output, and finally its results and
how it ended; it retries whatever could not be sent, so nothing is lost to a dropped
connection, and it reads ticks from the journal, so nothing is lost to a crash either.

Metering begins when the platform has recorded the start: the platform bounds reported GPU
time by the time since then, so time before it (a start report held up by an outage) is
never billed, and no tick is ever refused for exceeding it.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final

import anyio
import nats.errors
import structlog

from dante.agent.executors.spec import Executor, OutputLine, RunResult, RunSpec
from dante.agent.gpus.telemetry import GpuTelemetry, SimulatedTelemetry
from dante.agent.journal import AttemptRecord, Journal, JournalError, Outcome, Phase
from dante.agent.meter import UsageMeter
from dante.agent.output_queue import OutputQueue
from dante.agent.sending import Backoff, Unreachable, attempt_call
from dante.agent.setup import Limits
from dante.agent.stats import AgentStats
from dante.agent.transfers import Transfers
from dante.agent.workspace import WorkspaceError, pack_results, safe_path, write_stop_reason
from dante.client.commands import Client, CommandError, PlatformUnavailable, new_command_id
from dante.schemas import commands as cmd
from dante.schemas.values import DockerPayload, FileRef

log = structlog.get_logger(__name__)

TICKS_PER_COMMAND: Final = 100
#: Transient refusals of a results upload or an output batch tolerated before giving up on
#: them (the job's outcome is still reported). An unreachable platform is waited for.
TRANSFER_TRIES: Final = 5
SHUTDOWN: Final = "shutdown"
SHUTDOWN_ERROR: Final = "the provider's agent shut down"


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptDeps:
    """What every attempt shares: the daemon's services and settings."""

    provider_id: str
    journal: Journal
    client: Client
    transfers: Transfers
    executor: Executor
    telemetry: GpuTelemetry
    jobs_dir: Path
    tick_s: float
    #: False for simulated GPUs: no device is handed to Docker.
    request_gpus: bool
    stop_grace_s: float
    limits: Limits
    #: How the reporter waits before it retries: it may end early, when the agent's
    #: connection to the platform was just (re)established.
    pause: Callable[[float], Awaitable[None]] = anyio.sleep
    #: What the agent counts (its metrics).
    stats: AgentStats = field(default_factory=AgentStats)


def job_dir(jobs_dir: Path, job_id: str, attempt: int) -> Path:
    """The attempt's own folder: `<jobs>/<job_id>/<attempt>/`."""
    return jobs_dir / job_id / str(attempt)


def results_archive(jobs_dir: Path, job_id: str, attempt: int) -> Path:
    """Where the packed results wait for upload: beside the attempt's folder, not in it."""
    return jobs_dir / job_id / f"results-{attempt}.tar.gz"


class Attempt:
    """Runs and reports one attempt; `run()` returns once there is nothing left to do."""

    def __init__(self, deps: AttemptDeps, record: AttemptRecord, *, decline: str = "") -> None:
        self.deps = deps
        self.key = record.key
        self.job_id, self.attempt = record.key
        self.assignment = record.assignment
        self.phase: Phase = record.phase
        self.outcome = record.outcome
        self.results: FileRef | None = record.results
        self.start_reported = record.start_reported
        self.started_at = record.started_at
        self.decline_reason = decline
        self.work_dir = job_dir(deps.jobs_dir, self.job_id, self.attempt)
        self.log = log.bind(job_id=self.job_id, attempt=self.attempt)
        self.stop = anyio.Event()
        self.stop_code: str | None = None
        self.stop_reason = ""
        #: Set when the job is no longer running here (or never will): the daemon drains on it.
        self.executed = anyio.Event()
        self.done = anyio.Event()
        self.meter = UsageMeter(
            record.assignment.gpu_indices,
            deps.telemetry,
            next_seq=deps.journal.last_tick(record.key) + 1,
        )
        self.output = OutputQueue()
        self._finished_command: cmd.ReportJobFinished | None = None
        self._wake = anyio.Event()
        self._wake.set()
        if record.stop_code is not None:
            self.request_stop(record.stop_code, record.stop_reason, journal=False)

    # ── control ─────────────────────────────────────────────────────────────────────────

    @property
    def gpu_indices(self) -> tuple[int, ...]:
        return tuple(self.assignment.gpu_indices)

    @property
    def revoked(self) -> bool:
        return self.stop_code == "revoked"

    @property
    def running(self) -> bool:
        """Holding this machine's GPUs: accepted, or running, not yet ended."""
        return not self.executed.is_set()

    @property
    def unstarted(self) -> bool:
        """Not handed to the executor yet (and so never run)."""
        return self.phase in ("received", "accepted", "inputs")

    def request_stop(self, code: str, reason: str = "", *, journal: bool = True) -> None:
        """Stop the job (the platform's Stop, or the agent shutting down); the first wins."""
        if self.stop_code is not None:
            return
        self.stop_code = code
        self.stop_reason = reason
        if journal and code != SHUTDOWN:
            self.deps.journal.record_stop(self.key, code, reason)
        self.log.info("stop requested", code=code, reason=reason or None)
        if self.phase in ("starting", "started") and self.work_dir.is_dir():
            # Before the SIGTERM the stop event leads to, so the job can read why.
            write_stop_reason(self.work_dir, code, reason)
        self.stop.set()
        self._wake.set()

    def _set_phase(self, phase: Phase, *, note: str | None = None) -> None:
        self.deps.journal.set_phase(self.key, phase, note=note)
        self.log.debug("attempt phase", phase=phase, was=self.phase, note=note)
        self.phase = phase

    # ── the whole life ──────────────────────────────────────────────────────────────────

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._report)
                try:
                    await self._execute()
                finally:
                    self.executed.set()
                    self._wake.set()
            if self.phase in ("reported", "dropped"):
                await anyio.to_thread.run_sync(self._clean_up)
        finally:
            self.executed.set()
            self.done.set()

    async def _execute(self) -> None:
        if self.phase not in ("received", "accepted", "inputs"):
            return  # ran before (a restart): only its report is left
        if self.decline_reason:
            await self._decline(self.decline_reason)
        elif await self._prepare():
            # From here on the attempt is never started again, whatever happens to the agent.
            self._set_phase("starting")
            result = await self._run_job()
            if self.revoked:
                self._drop(f"taken away by the platform: {self.stop_reason or 'revoked'}")
            else:
                self._finish(self._outcome_of(result))

    async def _prepare(self) -> bool:
        """Accept and fetch the inputs; False if the attempt ended on the way."""
        if self.phase == "received":
            if self.stop.is_set():
                self._end_unstarted()
                return False
            refusal = await self._command(self._ids(cmd.AcceptAssignment))
            if refusal is not None:
                self._drop(f"the platform did not let us accept it: {refusal}")
                return False
            self._set_phase("accepted")
            self.log.info("assignment accepted", gpus=list(self.gpu_indices))
        if self.phase == "accepted":
            problem = await self._fetch_inputs()
            if problem is not None and self.stop.is_set():
                self._end_unstarted()
                return False
            if problem is not None:
                self._finish(Outcome(error=problem, upload=False))
                return False
            self._set_phase("inputs")
        if self.stop.is_set():
            self._end_unstarted()
            return False
        return True

    async def _decline(self, reason: str) -> None:
        refusal = await self._command(
            cmd.DeclineAssignment(
                command_id=new_command_id(),
                provider_id=self.deps.provider_id,
                job_id=self.job_id,
                attempt=self.attempt,
                reason=reason,
            )
        )
        self._set_phase("declined", note=reason if refusal is None else f"{reason} ({refusal})")
        self.deps.stats.declined += 1
        self.log.info("assignment declined", reason=reason)

    def _end_unstarted(self) -> None:
        """Stopped before the job ran: nothing ran, so nothing is billed or uploaded."""
        if self.revoked or self.stop_code is None:
            self._drop(f"taken away by the platform before it started: {self.stop_reason}")
        elif self.stop_code == SHUTDOWN:
            self._finish(Outcome(error=SHUTDOWN_ERROR, interrupted=True, upload=False))
        else:
            reason = self.stop_reason or self.stop_code
            self._finish(Outcome(error=f"stopped before it started: {reason}", upload=False))

    def _finish(self, outcome: Outcome) -> None:
        self.deps.journal.record_outcome(self.key, outcome)
        self.outcome = outcome
        self.phase = "finished"
        self._wake.set()

    def _drop(self, why: str) -> None:
        self._set_phase("dropped", note=why)
        self.log.info("attempt dropped", why=why)
        self._wake.set()

    # ── steps ───────────────────────────────────────────────────────────────────────────

    def _ids(self, kind: type[cmd.AcceptAssignment | cmd.ReportJobStarted]) -> cmd.Command[Any]:
        return kind(
            command_id=new_command_id(),
            provider_id=self.deps.provider_id,
            job_id=self.job_id,
            attempt=self.attempt,
        )

    async def _command(self, command: cmd.Command[Any]) -> str | None:
        """Send until the platform answers (or the attempt is stopped); None if it agreed,
        else why it refused."""
        backoff = Backoff()
        while True:
            try:
                await attempt_call(lambda: self.deps.client.send(command))
            except CommandError as error:
                return f"{error.code}: {error}"
            except Unreachable as exc:
                if self.stop.is_set() and command.VERB != "finished":
                    return f"stopped while the platform was unreachable ({exc})"
                self.log.warning("platform unreachable", command=command.VERB, error=str(exc))
                with anyio.move_on_after(backoff.delay()):
                    await self.stop.wait()
                continue
            return None

    async def _fetch_inputs(self) -> str | None:
        """Fetch every input into the attempt's folder; None, or why the job cannot run."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for ref in self.assignment.inputs:
            backoff = Backoff()
            while True:
                try:
                    dest = safe_path(self.work_dir, ref.path)
                    await attempt_call(partial(self._fetch, ref, dest))
                except WorkspaceError as exc:
                    return f"input {ref.path!r} refused: {exc}"
                except CommandError as error:
                    return f"input {ref.path!r} could not be fetched: {error}"
                except Unreachable as exc:
                    if self.stop.is_set():
                        return f"stopped while fetching inputs ({exc})"
                    self.log.warning("input fetch failed; retrying", path=ref.path, error=str(exc))
                    with anyio.move_on_after(backoff.delay()):
                        await self.stop.wait()
                    continue
                except Exception as exc:  # a corrupt or changed download
                    return f"input {ref.path!r} could not be fetched: {exc}"
                break
        if self.assignment.inputs:
            self.log.info("inputs fetched", files=len(self.assignment.inputs))
        return None

    async def _fetch(self, ref: FileRef, dest: Path) -> None:
        await self.deps.transfers.fetch_input(self.job_id, ref, dest)

    async def _run_job(self) -> RunResult:
        deps = self.deps
        payload = self.assignment.payload
        memory, cpus = deps.limits.for_job(
            len(self.gpu_indices), container=isinstance(payload, DockerPayload)
        )
        spec = RunSpec(
            job_id=self.job_id,
            attempt=self.attempt,
            payload=payload,
            work_dir=self.work_dir,
            gpu_indices=self.gpu_indices,
            request_gpus=deps.request_gpus,
            max_duration_s=self.assignment.max_duration_s,
            memory_limit_mb=memory,
            cpu_limit=cpus,
            stop_grace_s=deps.stop_grace_s,
        )
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._meter_ticks)
                result = await deps.executor.run(
                    spec, on_output=self._on_output, stop=self.stop, on_started=self._on_started
                )
                self.meter.end()
                tasks.cancel_scope.cancel()
        finally:
            self._busy(busy=False)
        self._record_tick()  # the last, partial interval
        self.log.info(
            "job ended",
            exit_code=result.exit_code,
            error=result.error or None,
            timed_out=result.timed_out,
            stopped=result.stopped,
            gpu_ms=self.meter.metered_ms,
        )
        return result

    async def _on_started(self) -> None:
        self.started_at = datetime.now(UTC)
        self.deps.journal.record_started(self.key, self.started_at)
        self.phase = "started"
        self._busy(busy=True)
        self.log.info("job started")
        self._wake.set()

    async def _on_output(self, lines: Sequence[OutputLine]) -> None:
        self.output.add(lines)
        self._wake.set()

    def _busy(self, *, busy: bool) -> None:
        telemetry = self.deps.telemetry
        if isinstance(telemetry, SimulatedTelemetry):
            telemetry.set_busy(self.gpu_indices, busy)

    async def _meter_ticks(self) -> None:
        while True:
            await anyio.sleep(self.deps.tick_s)
            try:
                self._record_tick()
            except JournalError as exc:
                # Not recorded, so not sent: the next tick covers this interval too.
                self.log.exception("usage tick not journaled", error=str(exc))

    def _record_tick(self) -> None:
        tick = self.meter.prepare()
        if tick is None:
            return
        # Journaled before it is sent: once here, it reaches the platform exactly once.
        self.deps.journal.add_tick(self.key, tick)
        self.meter.commit(tick)
        self._wake.set()

    def _outcome_of(self, result: RunResult) -> Outcome:
        if self.stop_code == SHUTDOWN and result.stopped:
            return Outcome(exit_code=result.exit_code, error=SHUTDOWN_ERROR, interrupted=True)
        ran = result.started_at is not None
        if result.error:
            return Outcome(error=result.error, upload=ran)
        if result.timed_out:
            limit = self.assignment.max_duration_s
            return Outcome(
                exit_code=result.exit_code,
                error=f"the job ran past its maximum duration of {limit} s and was stopped",
            )
        if result.stopped and self.stop_code not in (None, "cancelled"):
            reason = self.stop_reason or self.stop_code
            return Outcome(exit_code=result.exit_code, error=f"stopped by the platform: {reason}")
        # A cancelled job reported finished becomes cancelled: the platform decides.
        return Outcome(exit_code=result.exit_code)

    # ── reporting ───────────────────────────────────────────────────────────────────────

    async def _report(self) -> None:
        backoff = Backoff()
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            if self.phase in ("reported", "declined", "dropped"):
                return
            if self.revoked:
                if self.executed.is_set():
                    self._drop(f"taken away by the platform: {self.stop_reason or 'revoked'}")
                    return
                continue  # the runner is stopping the job; it drops the attempt
            try:
                await self._report_pending()
            except Unreachable as exc:
                delay = backoff.delay()
                self.log.warning(
                    "report failed; retrying", error=str(exc), retry_in=round(delay, 1)
                )
                await self.deps.pause(delay)
                self._wake.set()
                continue
            backoff.reset()
            if self.phase in ("reported", "dropped"):
                return

    async def _report_pending(self) -> None:
        outcome = self.outcome  # read first: every tick it implies is journaled already
        # A job that ended before its start could be reported is reported finished only:
        # it was never metered, so there is no usage to go with a start.
        if outcome is None and self.started_at is not None and not self.start_reported:
            await self._report_started()
            if self.phase == "dropped":
                return
        await self._send_ticks()
        await self._send_output()
        if outcome is not None and self.phase == "finished":
            await self._report_finished(outcome)

    async def _report_started(self) -> None:
        try:
            await attempt_call(lambda: self.deps.client.send(self._ids(cmd.ReportJobStarted)))
        except CommandError as error:
            # Not this agent's attempt any more (requeued, ended): stop the job, report nothing.
            self.request_stop("revoked", f"the platform refused its start: {error}")
            return
        self.meter.begin(time.monotonic())
        self.deps.journal.record_start_reported(self.key)
        self.start_reported = True

    async def _send_ticks(self) -> None:
        journal = self.deps.journal
        while ticks := journal.pending_ticks(self.key, TICKS_PER_COMMAND):
            seqs = [tick.seq for tick in ticks]
            command = cmd.RecordUsage(
                command_id=new_command_id(),
                provider_id=self.deps.provider_id,
                job_id=self.job_id,
                attempt=self.attempt,
                ticks=ticks,
            )
            try:
                await attempt_call(partial(self.deps.client.send, command))
            except CommandError as error:
                # Final: ticks of an attempt that ended or moved are not recorded; sending
                # them again would not change that.
                self.log.warning("usage refused", ticks=seqs, code=error.code, error=str(error))
                journal.mark_ticks(self.key, seqs, "dropped")
                self.deps.stats.usage_refused_ticks += len(ticks)
                continue
            journal.mark_ticks(self.key, seqs, "sent")
            stats = self.deps.stats
            stats.usage_reports += 1
            stats.usage_ticks += len(ticks)
            stats.usage_gpu_ms += sum(tick.gpu_ms for tick in ticks)

    async def _send_output(self) -> None:
        failures = 0
        while batch := self.output.batch():
            if not batch.lines:
                return
            try:
                await self.deps.transfers.send_output(self.job_id, self.attempt, batch.lines)
            except CommandError as error:
                failures += 1
                if error.code in ("unavailable", "conflict") and failures < TRANSFER_TRIES:
                    await anyio.sleep(0.2 * failures)
                    continue
                self.log.warning("output refused", lines=len(batch.lines), error=str(error))
            except Exception as exc:
                if _is_unreachable(exc):
                    raise Unreachable(f"output: {exc!r}") from exc
                self.log.warning("output not sent", lines=len(batch.lines), error=repr(exc))
            self.output.sent(batch)

    async def _report_finished(self, outcome: Outcome) -> None:
        if outcome.upload and self.results is None and not outcome.interrupted:
            self.results = await self._upload_results()
        # One command for every try: a retry after a lost reply is the same command.
        command = self._finished_command = self._finished_command or cmd.ReportJobFinished(
            command_id=new_command_id(),
            provider_id=self.deps.provider_id,
            job_id=self.job_id,
            attempt=self.attempt,
            exit_code=outcome.exit_code,
            error=outcome.error[:1000],
            results=self.results,
            interrupted=outcome.interrupted,
        )
        try:
            await attempt_call(lambda: self.deps.client.send(command))
        except CommandError as error:
            self._drop(f"the platform refused its outcome: {error}")
            return
        self._set_phase("reported")
        kind = "interrupted" if outcome.interrupted else "failed" if outcome.error else "completed"
        self.deps.stats.attempts_finished[kind] += 1
        self.log.info(
            "attempt reported",
            exit_code=outcome.exit_code,
            error=outcome.error or None,
            interrupted=outcome.interrupted,
            results=self.results.object if self.results else None,
        )

    async def _upload_results(self) -> FileRef | None:
        """Pack `out/` and upload it; None (logged) when there is nothing or it fails for good."""
        archive = results_archive(self.deps.jobs_dir, self.job_id, self.attempt)
        if not self.work_dir.is_dir():
            return None
        try:
            packed = await anyio.to_thread.run_sync(pack_results, self.work_dir, archive)
        except (WorkspaceError, OSError) as exc:
            self.log.warning("results not packed", error=str(exc))
            return None
        if packed.skipped:
            self.log.info("results: entries left out", skipped=list(packed.skipped))
        if packed.files == 0:
            self.log.info("no results to upload: out/ holds no files")
            return None
        failures = 0
        while True:
            try:
                ref = await self.deps.transfers.upload_results(self.job_id, self.attempt, archive)
            except CommandError as error:
                failures += 1
                if error.code in ("unavailable", "conflict") and failures < TRANSFER_TRIES:
                    await anyio.sleep(0.5 * failures)
                    continue
                self.log.warning("results refused", error=str(error))
                return None
            except Exception as exc:
                if _is_unreachable(exc):
                    raise Unreachable(f"upload: {exc!r}") from exc
                self.log.warning("results upload failed", error=repr(exc))
                return None
            self.deps.journal.record_results(self.key, ref)
            self.log.info("results uploaded", object=ref.object, size=ref.size)
            return ref

    def _clean_up(self) -> None:
        """Delete the attempt's folder and archive; the platform has what it needs."""
        shutil.rmtree(self.work_dir, onerror=_writable_and_retry)
        results_archive(self.deps.jobs_dir, self.job_id, self.attempt).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.work_dir.parent.rmdir()  # the job's folder, once no attempt is left in it


def _is_unreachable(exc: Exception) -> bool:
    return isinstance(exc, PlatformUnavailable | nats.errors.Error | TimeoutError)


def _writable_and_retry(function: Callable[..., object], path: str, _: object) -> None:
    """rmtree's error hook: a job may leave read-only folders; make them writable, retry."""
    target = Path(path)
    try:
        target.parent.chmod(0o700)
        if target.is_dir() and not target.is_symlink():
            target.chmod(0o700)
        function(path)
    except OSError:
        if target.exists():
            log.warning("could not delete", path=path)
