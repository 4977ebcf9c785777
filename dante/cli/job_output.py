"""What goes into a job and comes out of it: input uploads, logs, and results.

Transfers go through `dante.client.transfer`; progress shows on stderr in a terminal only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import msgspec
from cyclopts import Parameter

from dante.cli.failures import UnsafeResults
from dante.cli.jobs import JobId, again, check_job_id
from dante.cli.options import Json, UsageError
from dante.cli.render import Progress, emit, size, to_builtins
from dante.cli.session import Session, with_session

if TYPE_CHECKING:
    from dante.schemas.results import LogLine, LogPage

#: How often `--follow` asks for new lines when there were none, at most.
_FOLLOW_MAX_PAUSE_S: Final = 1.0


# ── logs ────────────────────────────────────────────────────────────────────────────────


def _empty(page: LogPage) -> LogPage:
    """The same position with no new lines: what a retried read of nothing new gives."""
    return msgspec.structs.replace(page, lines=[])


def _print_line(line: LogLine, *, timestamps: bool, json: bool) -> None:
    if json:
        print(msgspec.json.encode(to_builtins(line)).decode(), flush=True)
        return
    text = f"{line.at.astimezone().strftime('%H:%M:%S')} {line.text}" if timestamps else line.text
    print(text, file=sys.stderr if line.stream == "stderr" else sys.stdout, flush=True)


async def show_logs(
    s: Session,
    job_id: str,
    *,
    follow: bool = False,
    timestamps: bool = False,
    json: bool = False,
) -> int:
    """Print a job's output; with `follow`, keep printing until the job has ended."""
    import anyio

    from dante.client.transfer import read_logs

    renter = s.renter()
    check_job_id(job_id)
    after = 0
    attempt = None
    collected: list[LogLine] = []
    progress = Progress()
    pause = 0.1

    async def read() -> LogPage:
        return await read_logs(renter, job_id, after)

    page = await read()
    while True:
        after = page.next
        for line in page.lines:
            if json and not follow:
                collected.append(line)
                continue
            if attempt is not None and line.attempt != attempt and not json:
                print(f"--- attempt {line.attempt} ---", flush=True)
            attempt = line.attempt
            progress.clear()
            _print_line(line, timestamps=timestamps, json=json)
        if page.lines:
            pause = 0.1
        elif not follow or page.ended:
            break
        else:
            progress.show("waiting for output (Ctrl-C stops following; the job goes on)")
            await anyio.sleep(pause)
            pause = min(pause * 2, _FOLLOW_MAX_PAUSE_S)
        page = await again(read, _empty(page))
    progress.clear()
    if json and not follow:
        emit({"job_id": job_id, "lines": collected, "next": after, "ended": page.ended})
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
    json_output: Json = False,
) -> int:
    """Print a job's output (stderr lines to stderr); --follow keeps going until the job ends.

    With --json: one document with every line; with --json --follow, one JSON object per
    line of output, as it comes (JSON Lines).
    """
    return await with_session(
        lambda s: show_logs(s, job_id, follow=follow, timestamps=timestamps, json=json_output)
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
