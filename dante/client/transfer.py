"""Client side of job output and file transfer, for the CLI and the agent.

Files travel in `CHUNK_BYTES` pieces through the command service; the sha256 is computed
while reading, and a download is written to a temporary file next to its destination,
checked, and only then renamed into place.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final

import anyio
import msgspec

from dante.client.commands import CommandError, new_command_id
from dante.schemas.commands import (
    CHUNK_BYTES,
    Command,
    DownloadResults,
    FetchInput,
    GetJobLogs,
    OutputLine,
    RecordOutput,
    UploadInput,
    UploadResults,
)
from dante.schemas.results import ChunkResult, LogPage, UploadResult
from dante.schemas.values import FileRef, check_relative_path

if TYPE_CHECKING:
    from pathlib import Path

    from dante.client.commands import Client

#: How long an uploader waits for a large file to be assembled after its last chunk.
ASSEMBLY_WAIT_S: Final = 600.0
#: Output lines per command: at most the command's limit, and well under a NATS message.
_MAX_LINES: Final = 2000
_MAX_BATCH_BYTES: Final = 512 * 1024

Progress = Callable[[int, int], None]


class TransferError(Exception):
    """What arrived is not what was announced (size or sha256), or the file changed."""


# ── output ──────────────────────────────────────────────────────────────────────────────


async def send_output(
    client: Client, provider_id: str, job_id: str, attempt: int, lines: Sequence[OutputLine]
) -> int:
    """Record a job attempt's output lines, in as many commands as they need; the count."""
    stored = 0
    for batch in _batches(lines):
        command = RecordOutput(
            command_id=new_command_id(),
            provider_id=provider_id,
            job_id=job_id,
            attempt=attempt,
            lines=batch,
        )
        stored += (await client.ask(command)).stored
    return stored


def _batches(lines: Sequence[OutputLine]) -> list[list[OutputLine]]:
    batches: list[list[OutputLine]] = []
    batch: list[OutputLine] = []
    size = 0
    for line in lines:
        # JSON escapes can make a line several times longer than its text.
        line_size = len(msgspec.json.encode(line))
        if batch and (len(batch) >= _MAX_LINES or size + line_size > _MAX_BATCH_BYTES):
            batches.append(batch)
            batch, size = [], 0
        batch.append(line)
        size += line_size
    if batch:
        batches.append(batch)
    return batches


async def read_logs(client: Client, job_id: str, after: int = 0, limit: int = 1000) -> LogPage:
    """The job's output lines after position `after` (the `next` of the previous page)."""
    return await client.ask(GetJobLogs(job_id=job_id, after=after, limit=limit))


# ── uploads ─────────────────────────────────────────────────────────────────────────────

#: A chunk command for (offset, data, and for the last chunk: the file's size and sha256).
MakeChunk = Callable[[int, bytes, tuple[int, str] | None], Command[UploadResult]]


async def upload_results(
    client: Client, provider_id: str, job_id: str, attempt: int, path: Path
) -> FileRef:
    """Upload a job attempt's results (a tar.gz); the stored file to report as finished."""

    def make(offset: int, data: bytes, ending: tuple[int, str] | None) -> Command[UploadResult]:
        size, sha = ending or (None, None)
        return UploadResults(
            command_id=new_command_id(),
            provider_id=provider_id,
            job_id=job_id,
            attempt=attempt,
            offset=offset,
            data=data,
            final=ending is not None,
            size=size,
            sha256=sha,
        )

    return await _upload(client, path, make)


async def upload_input(
    client: Client, path: Path, rel_path: str, *, upload_id: str | None = None
) -> FileRef:
    """Upload a file a job will find at `rel_path` in its folder; the ref to submit it with."""
    check_relative_path(rel_path)
    upload_id = upload_id or uuid.uuid4().hex

    def make(offset: int, data: bytes, ending: tuple[int, str] | None) -> Command[UploadResult]:
        size, sha = ending or (None, None)
        return UploadInput(
            command_id=new_command_id(),
            upload_id=upload_id,
            path=rel_path,
            offset=offset,
            data=data,
            final=ending is not None,
            size=size,
            sha256=sha,
        )

    return await _upload(client, path, make)


async def _upload(client: Client, path: Path, make: MakeChunk) -> FileRef:
    digest = hashlib.sha256()
    offset = 0
    async with await anyio.open_file(path, "rb") as source:
        chunk = await source.read(CHUNK_BYTES)
        while True:
            # Read one ahead, so the last chunk goes out as the final one.
            following = await source.read(CHUNK_BYTES) if chunk else b""
            digest.update(chunk)
            if not following:
                ending = (offset + len(chunk), digest.hexdigest())
                return await _finish(client, make(offset, chunk, ending))
            await client.ask(make(offset, chunk, None))
            offset += len(chunk)
            chunk = following


async def _finish(client: Client, final: Command[UploadResult]) -> FileRef:
    """Send the final chunk until the platform has assembled the file (large files take a
    while; it answers `unavailable` meanwhile)."""
    deadline = asyncio.get_running_loop().time() + ASSEMBLY_WAIT_S
    pause = 0.1
    while True:
        try:
            result = await client.ask(final)
        except CommandError as error:
            if error.code != "unavailable" or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)
            continue
        if result.file is None:
            raise TransferError("the platform did not store the file after its final chunk")
        return result.file


# ── downloads ───────────────────────────────────────────────────────────────────────────


async def download_results(
    client: Client, job_id: str, dest: Path, progress: Progress | None = None
) -> FileRef:
    """Download a job's results to `dest`, checked against their sha256."""

    async def chunk(offset: int) -> ChunkResult:
        return await client.ask(DownloadResults(job_id=job_id, offset=offset))

    return await _download(chunk, dest, None, progress)


async def fetch_input(
    client: Client, provider_id: str, job_id: str, ref: FileRef, dest: Path
) -> None:
    """Fetch a job's input file to `dest` (for the agent), checked against `ref`."""

    async def chunk(offset: int) -> ChunkResult:
        command = FetchInput(
            provider_id=provider_id, job_id=job_id, object=ref.object, offset=offset
        )
        return await client.ask(command)

    await _download(chunk, dest, ref, None)


async def _download(
    chunk: Callable[[int], Awaitable[ChunkResult]],
    dest: Path,
    expected: FileRef | None,
    progress: Progress | None,
) -> FileRef:
    part = anyio.Path(dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part"))
    try:
        first = await _receive(chunk, part, expected, progress)
        await part.rename(dest)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await part.unlink(missing_ok=True)
        raise
    return FileRef(object=first.object, path=dest.name, size=first.size, sha256=first.sha256)


async def _receive(
    chunk: Callable[[int], Awaitable[ChunkResult]],
    part: anyio.Path,
    expected: FileRef | None,
    progress: Progress | None,
) -> ChunkResult:
    """Write the file into `part`, checked; its first chunk, which describes it."""
    digest = hashlib.sha256()
    offset = 0
    async with await anyio.open_file(part, "wb") as out:
        first = piece = await chunk(0)
        described = (first.object, first.size, first.sha256)
        if expected is not None and described != (expected.object, expected.size, expected.sha256):
            raise TransferError(f"{first.object} is not the file the job names")
        while True:
            if (piece.object, piece.size, piece.sha256) != described or piece.offset != offset:
                raise TransferError(f"{first.object} changed during the download")
            await out.write(piece.data)
            digest.update(piece.data)
            offset += len(piece.data)
            if progress is not None:
                progress(offset, first.size)
            if piece.done:
                break
            if not piece.data:
                raise TransferError(f"the download of {first.object} stalled at {offset}")
            piece = await chunk(offset)
    if offset != first.size or digest.hexdigest() != first.sha256:
        raise TransferError(
            f"{first.object} arrived with {offset} bytes and sha256 {digest.hexdigest()}, "
            f"not {first.size} bytes and {first.sha256}"
        )
    return first
