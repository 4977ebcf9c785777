"""`dante jobs …`: submit a job, follow it, read its logs, cancel it, fetch its results."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, TypeVar

from cyclopts import App, Parameter

from dante.cli.options import EXIT_TIMEOUT, Json, UsageError
from dante.cli.render import (
    Progress,
    ago,
    dgpu,
    duration,
    emit,
    pairs,
    rate,
    table,
    to_builtins,
    when,
)
from dante.cli.session import Session, with_session
from dante.cli.submission import Interpreter, JobSpec, describe_payload

if TYPE_CHECKING:
    from dante.schemas.results import SubmitResult
    from dante.schemas.views import JobView

T = TypeVar("T")

app = App(name="jobs", help="Your jobs: submit, list, follow, read logs, cancel, get results.")
app.command(
    "dante.cli.job_output:logs", name="logs", help="Print a job's output; --follow until it ends."
)
app.command(
    "dante.cli.job_output:results", name="results", help="Download a job's results and unpack them."
)
app.command(
    "dante.cli.statement:statement",
    name="statement",
    help="A job's bill: every event, tick and charge, and a digest both sides can compare.",
)

TERMINAL: Final = frozenset({"completed", "failed", "cancelled", "stopped"})
#: States in which a job ended without completing: `jobs wait` exits 1.
BAD_ENDINGS: Final = frozenset({"failed", "cancelled", "stopped"})
#: Refusals that say "not now" (read models behind, a lost race): waiting just asks again.
TRANSIENT: Final = frozenset({"unavailable", "conflict"})
STATES: Final = ("queued", "assigned", "running", "completed", "failed", "cancelled", "stopped")


# ── views ───────────────────────────────────────────────────────────────────────────────


def job_document(job: JobView) -> dict[str, Any]:
    """A job for `--json`: every field of the view, plus the short names scripts want."""
    ended_badly = job.state in BAD_ENDINGS
    return {
        **to_builtins(job),
        "gpus": job.requirements.gpu_count,
        "reason": (job.end_reason or job.end_code or job.state) if ended_badly else None,
        "reason_code": job.end_code if ended_badly else None,
    }


def _where(job: JobView) -> str:
    if job.provider_id is None:
        return ""
    gpus = ", ".join(str(i) for i in job.gpu_indices)
    return f" on {job.provider_id}, GPU {gpus} (attempt {job.attempts})"


def state_line(job: JobView) -> str:
    """What a job is doing, in one phrase."""
    match job.state:
        case "queued":
            why = f": {job.queue_reason}" if job.queue_reason else ""
            return f"queued{why}"
        case "assigned" | "running":
            return job.state + _where(job)
        case "completed":
            code = "" if job.exit_code is None else f" (exit code {job.exit_code})"
            return f"completed{code}"
        case _:
            reason = job.end_reason or job.end_code
            if reason:
                return f"{job.state}: {reason}"
            return job.state + ("" if job.exit_code is None else f" (exit code {job.exit_code})")


def print_job(job: JobView) -> None:
    what = job.image if job.payload_kind == "docker" else f"{job.interpreter} script"
    req = job.requirements
    wanted = f"{req.gpu_count} x {req.gpu_model or 'any GPU'}"
    if req.min_vram_gb:
        wanted += f", {req.min_vram_gb}+ GB"
    if req.max_price is not None:
        wanted += f", at most {rate(req.max_price)}"
    if req.max_duration_s is not None:
        wanted += f", for at most {duration(req.max_duration_s)}"
    state = state_line(job)
    if job.simulated:
        state += " (simulated GPUs: telemetry is made up, not measured)"
    lines = [
        ("job", job.job_id + (f" ({job.name})" if job.name else "")),
        ("state", state),
        ("runs", what or job.payload_kind),
        ("asks for", wanted),
    ]
    if job.price_udgpu is not None:
        lines.append(("price", rate(job.price_udgpu)))
    lines.append(("GPU time", duration(job.gpu_ms / 1000)))
    lines.append(("charged", f"{dgpu(job.charged_udgpu)} dGPU"))
    lines.append(("submitted", f"{when(job.submitted_at)} ({ago(job.submitted_at)})"))
    if job.started_at is not None:
        lines.append(("started", when(job.started_at)))
    if job.finished_at is not None:
        lines.append(("ended", when(job.finished_at)))
    if job.results is not None:
        lines.append(("results", f"{job.results.size:,} bytes: dante jobs results {job.job_id}"))
    print(pairs(lines))


# ── actions (the verbs and the menu share them) ─────────────────────────────────────────


async def get_job(s: Session, job_id: str) -> JobView:
    from dante.schemas.commands import GetJob

    return await s.renter().ask(GetJob(job_id=job_id))


async def show_job(s: Session, job_id: str, *, json: bool = False) -> int:
    job = await get_job(s, check_job_id(job_id))
    if json:
        emit(job_document(job))
    else:
        print_job(job)
    return 0


async def list_jobs(
    s: Session, *, state: str | None = None, limit: int = 50, json: bool = False
) -> int:
    from dante.schemas.commands import ListJobs

    jobs = await s.renter().ask(ListJobs(state=state, limit=limit))
    if json:
        emit({"jobs": [job_document(job) for job in jobs]})
        return 0
    if not jobs:
        print("No jobs yet." if state is None else f"No {state} jobs.")
        return 0
    rows = [
        (
            job.job_id,
            job.name,
            job.state,
            str(job.requirements.gpu_count),
            job.provider_id or "-",
            when(job.submitted_at),
            dgpu(job.charged_udgpu),
        )
        for job in jobs
    ]
    print(
        table(
            ("JOB", "NAME", "STATE", "GPUS", "PROVIDER", "SUBMITTED", "CHARGED"),
            rows,
            right=(3, 6),
        )
    )
    return 0


async def submit_job(s: Session, spec: JobSpec, *, json: bool = False) -> int:
    """Quote (refused early if nothing could ever run it), upload inputs, submit."""
    from dante.cli.price import get_quote, quote_document, quote_lines
    from dante.client.commands import new_command_id
    from dante.schemas.commands import SubmitJob

    renter = s.renter()
    quote = await get_quote(s, spec.requirements, spec.requirements.max_duration_s)
    inputs = []
    if spec.uploads:
        from dante.cli.submission import upload_inputs

        inputs = await upload_inputs(renter, spec.uploads)
    command = SubmitJob(
        command_id=new_command_id(),
        name=spec.name,
        requirements=spec.requirements,
        payload=spec.payload,
        inputs=inputs,
    )
    result = await renter.ask(command)
    if json:
        emit({**to_builtins(result), "quote": quote_document(quote), "inputs": inputs})
        return 0
    print(f"Submitted job {result.job_id} ({describe_payload(spec.payload)}): {result.state}.")
    print(quote_lines(quote, [("held at start", held_at_start(result))]))
    print(f"Follow it: dante jobs logs {result.job_id} --follow")
    return 0


def held_at_start(result: SubmitResult) -> str:
    """What a submission holds: the hold taken now, or the least one, and why not yet."""
    held = (
        f"{dgpu(result.first_hold_udgpu)} dGPU"
        if result.available_now
        else f"at least {dgpu(result.first_hold_udgpu)} dGPU, when a matching GPU frees up"
    )
    if result.waits_for_budget and result.budget_room_at is not None:
        held += (
            f"; nothing is held yet: your {result.waits_for_budget} budget leaves less until "
            f"{result.budget_room_at:%Y-%m-%d %H:%M} UTC, when the job can start (or raise "
            "it with `dante wallet budget`)"
        )
    return held


async def wait_for(
    s: Session, job_id: str, *, timeout: float | None = None, json: bool = False
) -> int:
    """Poll until the job ends: 0 completed, 1 failed/cancelled/stopped, 4 on timeout."""
    import anyio

    progress = Progress()
    job = await get_job(s, check_job_id(job_id))
    pause = 0.2
    try:
        with anyio.move_on_after(timeout) as scope:
            while job.state not in TERMINAL:
                progress.show(
                    f"{job.job_id}: {state_line(job)}, charged {dgpu(job.charged_udgpu)} dGPU"
                )
                await anyio.sleep(pause)
                pause = min(pause * 1.5, 2.0)
                job = await again(lambda: get_job(s, job_id), job)
    finally:
        progress.clear()
    timed_out = scope.cancelled_caught
    if json:
        emit({**job_document(job), "timed_out": timed_out})
    elif timed_out:
        print(f"job {job.job_id} is still {state_line(job)} after {timeout:g} s")
    else:
        print(f"job {job.job_id} {state_line(job)}; charged {dgpu(job.charged_udgpu)} dGPU")
    if timed_out:
        return EXIT_TIMEOUT
    return 1 if job.state in BAD_ENDINGS else 0


async def again(ask: Callable[[], Awaitable[T]], previous: T) -> T:
    """One more look while waiting: a moment's unavailability keeps the previous answer."""
    from dante.client.commands import CommandError

    try:
        return await ask()
    except CommandError as exc:
        if exc.code not in TRANSIENT:
            raise
        return previous


async def cancel_job(s: Session, job_id: str, *, reason: str = "", json: bool = False) -> int:
    from dante.client.commands import new_command_id
    from dante.schemas.commands import CancelJob

    command = CancelJob(command_id=new_command_id(), job_id=check_job_id(job_id), reason=reason)
    result = await s.renter().ask(command)
    if json:
        emit(result)
    elif result.state == "cancelled":
        print(f"Cancelled job {result.job_id}.")
    else:
        print(
            f"Asked the provider to stop job {result.job_id} ({result.state}); it ends once "
            f"stopped. To wait for it: dante jobs wait {result.job_id}"
        )
        if result.stop_grace_s is not None:
            print(
                f"Billed: its GPU time until now, plus at most {result.stop_grace_s} s while "
                "it stops; nothing after that."
            )
    return 0


def check_job_id(job_id: str) -> str:
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", job_id):
        raise UsageError(f"{job_id!r} is not a job id (like job-1a2b3c4d5e6f7a8b)")
    return job_id


# ── the verbs ───────────────────────────────────────────────────────────────────────────

JobId = Annotated[str, Parameter(help="The job's id, as `dante jobs submit` printed it.")]


@app.command
async def submit(
    *command: Annotated[
        str, Parameter(help="After --: the command to run in the image, or the script's args.")
    ],
    script: Annotated[
        Path | None, Parameter(help="Run this script (sent inline, at most 1 MiB).")
    ] = None,
    interpreter: Annotated[
        Interpreter | None,
        Parameter(help="The script's interpreter. Default: bash for .sh, else python3."),
    ] = None,
    image: Annotated[
        str | None, Parameter(help="Run this Docker image (it must be on the provider).")
    ] = None,
    gpus: Annotated[int, Parameter(help="How many GPUs, all on one provider.")] = 1,
    gpu: Annotated[str | None, Parameter(help="A model or family: 'RTX 4090', 'A100'.")] = None,
    min_vram_gb: Annotated[int | None, Parameter(help="At least this much VRAM per GPU.")] = None,
    max_price: Annotated[str | None, Parameter(help="At most this many dGPU per GPU-hour.")] = None,
    max_hours: Annotated[
        str | None, Parameter(help="Stop the job after this many hours (2, 0.5).")
    ] = None,
    env: Annotated[
        tuple[str, ...],
        Parameter(negative=(), help="An environment variable, NAME=VALUE; repeat for more."),
    ] = (),
    input: Annotated[  # noqa: A002 (the option is --input)
        tuple[Path, ...],
        Parameter(negative=(), help="A file or folder the job finds in its folder; repeat."),
    ] = (),
    name: Annotated[str | None, Parameter(help="A name to know the job by.")] = None,
    network: Annotated[
        bool, Parameter(negative=(), help="Give an --image job network access.")
    ] = False,
    json_output: Json = False,
) -> int:
    """Submit a job: a script or a Docker image, on GPUs that match; prints its id and quote.

    Example: dante jobs submit --image pytorch/pytorch --gpus 2 --max-price 0.8 -- python train.py
    """
    from dante.cli.price import requirements
    from dante.cli.submission import build_payload, job_spec, parse_env

    spec = job_spec(
        name=name,
        requirements=requirements(
            gpus=gpus, gpu=gpu, min_vram_gb=min_vram_gb, max_price=max_price, max_hours=max_hours
        ),
        payload=build_payload(
            script=script,
            interpreter=interpreter,
            image=image,
            command=command,
            env=parse_env(env),
            network=network,
        ),
        inputs=input,
    )
    return await with_session(lambda s: submit_job(s, spec, json=json_output))


@app.command(name="list")
async def list_(
    *,
    state: Annotated[
        str | None, Parameter(help=f"Only jobs in this state: {', '.join(STATES)}.")
    ] = None,
    limit: Annotated[int, Parameter(help="At most this many, newest first.")] = 50,
    json_output: Json = False,
) -> int:
    """List your jobs, newest first."""
    if state is not None and state not in STATES:
        raise UsageError(f"--state {state!r} is not a state; one of {', '.join(STATES)}")
    if not 1 <= limit <= 10_000:
        raise UsageError(f"--limit must be between 1 and 10000, not {limit}")
    return await with_session(lambda s: list_jobs(s, state=state, limit=limit, json=json_output))


@app.command
async def status(job_id: JobId, /, *, json_output: Json = False) -> int:
    """Show a job: its state, where it runs, what it has cost, why it ended."""
    return await with_session(lambda s: show_job(s, job_id, json=json_output))


@app.command
async def wait(
    job_id: JobId,
    /,
    *,
    timeout: Annotated[
        float | None, Parameter(help="Give up after this many seconds (exit code 4).")
    ] = None,
    json_output: Json = False,
) -> int:
    """Wait until a job ends, showing its state meanwhile.

    Exit code 0 when it completed; 1 when it failed, was cancelled or stopped; 4 on timeout.
    """
    if timeout is not None and timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, not {timeout:g}")
    return await with_session(lambda s: wait_for(s, job_id, timeout=timeout, json=json_output))


@app.command
async def cancel(
    job_id: JobId,
    /,
    *,
    reason: Annotated[str, Parameter(help="Why, for the record.")] = "",
    json_output: Json = False,
) -> int:
    """Cancel a job: a queued one ends now, a running one is stopped by its provider."""
    if len(reason) > 1000:
        raise UsageError("--reason is longer than 1000 characters")
    return await with_session(lambda s: cancel_job(s, job_id, reason=reason, json=json_output))
