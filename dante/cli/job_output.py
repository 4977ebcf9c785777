"""What goes into a job and comes out of it: input uploads, logs, and results.

Transfers go through `dante.client.transfer`; progress shows on stderr in a terminal only.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import msgspec
from cyclopts import Parameter

from dante.cli.failures import UnsafeResults
from dante.cli.jobs import JobId, again, check_job_id
from dante.cli.options import Json, UsageError
from dante.cli.render import Progress, emit, size, to_builtins
from dante.cli.session import Session, with_session
from dante.schemas.results import LogLine

if TYPE_CHECKING:
    from dante.schemas.results import LogPage
    from dante.schemas.statements import JobStatement

#: How often `--follow` asks for new lines when there were none, at most.
_FOLLOW_MAX_PAUSE_S: Final = 1.0


# ── logs ──────────────────────────────────────────────────────────────────────────────

#: The events of a job's life shown among its output, besides every `Job…` event but usage.
_PLATFORM_EXTRA: Final = frozenset({"LowFundsWarned"})
#: How often `--follow` asks for the job's new platform events, at most.
_PLATFORM_EVERY_S: Final = 2.0
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """`--since`: a duration back from now (`90s`, `10m`, `1h30m`, `2d`) or a time (ISO 8601,
    `2026-12-03T10:00:00Z`, `2026-12-03 10:00`; local time when it names no zone)."""
    value = text.strip()
    now = now or datetime.now(UTC)
    compact = value.replace(" ", "")
    if compact and _DURATION.sub("", compact) == "":
        seconds = sum(float(n) * _UNIT_S[unit] for n, unit in _DURATION.findall(compact))
        return now - timedelta(seconds=seconds)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--since {text!r} is neither a duration (90s, 10m, 1h30m, 2d) nor a time "
            "(2026-12-03T10:00:00Z)"
        ) from None
    return at.astimezone(UTC) if at.tzinfo is not None else at.astimezone().astimezone(UTC)


@dataclass(frozen=True, slots=True)
class PlatformLine:
    """An event of the job's life, shown among its output as `[dante] …`."""

    at: datetime
    seq: int
    event: str
    attempt: int | None
    text: str


def _platform_lines(statement: JobStatement, after_seq: int) -> list[PlatformLine]:
    return [
        PlatformLine(entry.at, entry.seq, entry.type, entry.attempt, entry.summary)
        for entry in statement.events
        if entry.seq > after_seq
        and (
            (entry.type.startswith("Job") and entry.type != "JobResultsStored")
            or entry.type in _PLATFORM_EXTRA
        )
    ]


def _empty(page: LogPage) -> LogPage:
    """The same position with no new lines: what a retried read of nothing new gives."""
    return msgspec.structs.replace(page, lines=[])


def _json_line(line: LogLine | PlatformLine) -> dict[str, Any]:
    if isinstance(line, PlatformLine):
        return {
            "source": "platform",
            "at": line.at,
            "stream": None,
            "text": line.text,
            "attempt": line.attempt,
            "event": line.event,
            "seq": line.seq,
        }
    return {"source": "job", **to_builtins(line), "event": None, "seq": None}


def _print_line(line: LogLine | PlatformLine, *, timestamps: bool, json: bool) -> None:
    if json:
        print(msgspec.json.encode(_json_line(line)).decode(), flush=True)
        return
    text = f"[dante] {line.text}" if isinstance(line, PlatformLine) else line.text
    if timestamps:
        text = f"{line.at.astimezone().strftime('%H:%M:%S')} {text}"
    # The platform's lines go with the job's stderr: its stdout stays what the job printed.
    to_stderr = isinstance(line, PlatformLine) or line.stream == "stderr"
    print(text, file=sys.stderr if to_stderr else sys.stdout, flush=True)


class _Merged:
    """The job's lines and the platform's, printed in time order as they come."""

    def __init__(self, *, since: datetime | None, timestamps: bool, json: bool, keep: bool) -> None:
        self.since = since
        self.timestamps = timestamps
        self.json = json
        #: --json without --follow: one document at the end, so everything is kept.
        self.keep = keep
        self.kept: list[LogLine | PlatformLine] = []
        self.waiting: list[PlatformLine] = []
        self.attempt: int | None = None

    def platform(self, lines: list[PlatformLine]) -> None:
        self.waiting.extend(line for line in lines if self._wanted(line.at))
        self.waiting.sort(key=lambda line: (line.at, line.seq))

    def job(self, lines: list[LogLine], progress: Progress) -> None:
        for line in lines:
            if not self._wanted(line.at):
                continue
            while self.waiting and self.waiting[0].at <= line.at:
                self._show(self.waiting.pop(0), progress)
            self._show(line, progress)

    def flush(self, progress: Progress) -> None:
        while self.waiting:
            self._show(self.waiting.pop(0), progress)

    def _wanted(self, at: datetime) -> bool:
        return self.since is None or at >= self.since

    def _show(self, line: LogLine | PlatformLine, progress: Progress) -> None:
        if self.keep:
            self.kept.append(line)
            return
        if isinstance(line, LogLine):
            if self.attempt is not None and line.attempt != self.attempt and not self.json:
                print(f"--- attempt {line.attempt} ---", flush=True)
            self.attempt = line.attempt
        progress.clear()
        _print_line(line, timestamps=self.timestamps, json=self.json)


async def show_logs(
    s: Session,
    job_id: str,
    *,
    follow: bool = False,
    timestamps: bool = False,
    json: bool = False,
    since: datetime | None = None,
    platform: bool = True,
) -> int:
    """Print a job's output, with the platform's lines about it (assigned, started, requeued,
    stopped and why) in time order among them; with `follow`, until the job has ended."""
    import time

    import anyio

    from dante.client.transfer import read_logs
    from dante.schemas.commands import GetJobStatement

    renter = s.renter()
    check_job_id(job_id)
    after = 0
    seen_seq = 0
    asked_at = -_PLATFORM_EVERY_S
    merged = _Merged(since=since, timestamps=timestamps, json=json, keep=json and not follow)
    progress = Progress()
    pause = 0.1

    async def read() -> LogPage:
        return await read_logs(renter, job_id, after)

    async def platform_lines(*, now: bool) -> None:
        nonlocal seen_seq, asked_at
        if not platform or (not now and time.monotonic() - asked_at < _PLATFORM_EVERY_S):
            return
        asked_at = time.monotonic()
        statement = await renter.ask(GetJobStatement(job_id=job_id))
        found = _platform_lines(statement, seen_seq)
        seen_seq = max([seen_seq, *(line.seq for line in found)])
        merged.platform(found)

    await platform_lines(now=True)
    page = await read()
    while True:
        after = page.next
        merged.job(page.lines, progress)
        if page.lines:
            pause = 0.1
            if follow:
                await platform_lines(now=False)
                merged.flush(progress)
        elif not follow or page.ended:
            break
        else:
            await platform_lines(now=False)
            merged.flush(progress)
            progress.show("waiting for output (Ctrl-C stops following; the job goes on)")
            await anyio.sleep(pause)
            pause = min(pause * 2, _FOLLOW_MAX_PAUSE_S)
        page = await again(read, _empty(page))
    if follow:
        await platform_lines(now=True)  # how it ended
    merged.flush(progress)
    progress.clear()
    if merged.keep:
        emit(
            {
                "job_id": job_id,
                "lines": [_json_line(line) for line in merged.kept],
                "next": after,
                "ended": page.ended,
            }
        )
    return 0


async def logs(
    job_id: JobId,
    /,
    *,
    follow: Annotated[
        bool, Parameter(name=("--follow", "-f"), negative=(), help="Keep printing until it ends.")
    ] = False,
    timestamps: Annotated[
        bool, Parameter(negative=(), help="Begin each line with the time it was written.")
    ] = False,
    since: Annotated[
        str | None,
        Parameter(
            help="Only lines from then on: a duration back from now (90s, 10m, 1h30m, 2d) or "
            "a time (2026-12-03T10:00:00Z; local time without a zone)."
        ),
    ] = None,
    platform: Annotated[
        bool,
        Parameter(
            negative="--no-platform",
            help="Show the platform's lines about the job ([dante] assigned, started, "
            "requeued, stopped and why) among its output, on stderr. --no-platform: only "
            "what the job printed.",
        ),
    ] = True,
    json_output: Json = False,
) -> int:
    """Print a job's output (stderr lines to stderr); --follow keeps going until the job ends.

    The platform's lines about the job come in time order among them, marked `[dante]`, on
    stderr (stdout stays exactly what the job printed). With --json: one document with every
    line, each with its "source" ("job" or "platform"; a platform line names its "event");
    with --json --follow, one JSON object per line as it comes (JSON Lines).
    """
    start = parse_since(since) if since is not None else None
    return await with_session(
        lambda s: show_logs(
            s,
            job_id,
            follow=follow,
            timestamps=timestamps,
            json=json_output,
            since=start,
            platform=platform,
        )
    )


# ── results ─────────────────────────────────────────────────────────────────────────────


def _extract(archive: Path, dest: Path) -> list[str]:
    """Unpack the results into `dest`, refusing unsafe entries and never overwriting a file."""
    import tarfile

    from dante.agent.workspace import WorkspaceError, extract_inputs

    with tarfile.open(archive, mode="r:*") as tar:
        clashes = [m.name for m in tar.getmembers() if not m.isdir() and (dest / m.name).exists()]
    if clashes:
        raise UsageError(
            f"{dest / clashes[0]} exists and would be overwritten; choose another --out folder "
            f"(the archive is {archive})"
        )
    try:
        return extract_inputs(archive, dest)
    except WorkspaceError as exc:
        raise UnsafeResults(
            f"the results were not unpacked: {exc}; the archive is {archive}"
        ) from None


async def fetch_results(
    s: Session,
    job_id: str,
    *,
    out: Path | None = None,
    archive_only: bool = False,
    json: bool = False,
) -> int:
    import anyio

    from dante.client.transfer import download_results

    check_job_id(job_id)
    dest = out or Path(job_id)
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"--out {dest} is a file, not a folder")
    made = [folder for folder in (dest, *dest.parents) if not folder.exists()]
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / f"{job_id}-results.tar.gz"
    progress = Progress()
    try:
        ref = await download_results(
            s.renter(),
            job_id,
            archive,
            lambda done, total: progress.bytes("downloading", done, total),
        )
    except BaseException:
        # An unknown job, one without results, a failed download: leave no folder behind.
        _remove_empty(made)
        raise
    finally:
        progress.clear()
    files: list[str] = []
    if not archive_only:
        files = await anyio.to_thread.run_sync(_extract, archive, dest)
        archive.unlink()
    document: dict[str, Any] = {
        "job_id": job_id,
        "out": str(dest),
        "archive": str(archive) if archive_only else None,
        "size": ref.size,
        "sha256": ref.sha256,
        "files": files,
    }
    if json:
        emit(document)
    elif archive_only:
        print(f"Saved the results of {job_id} to {archive} ({size(ref.size)}).")
    else:
        print(f"Unpacked the results of {job_id} into {dest}/ ({len(files)} entries):")
        for name in files[:20]:
            print(f"  {name}")
        if len(files) > 20:
            print(f"  ... and {len(files) - 20} more")
    return 0


def _remove_empty(folders: list[Path]) -> None:
    """Remove `folders` (deepest first) as long as they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


async def results(
    job_id: JobId,
    /,
    *,
    out: Annotated[Path | None, Parameter(help="Folder to put them in. Default: ./JOB_ID")] = None,
    archive: Annotated[
        bool, Parameter(negative=(), help="Keep the .tar.gz as it came; do not unpack it.")
    ] = False,
    json_output: Json = False,
) -> int:
    """Download what a job left in its out/ folder, checked against its sha256, and unpack it.

    Nothing is overwritten: a file that exists already stops the unpacking.
    """
    return await with_session(
        lambda s: fetch_results(s, job_id, out=out, archive_only=archive, json=json_output)
    )
