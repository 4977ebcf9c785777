"""Chunked uploads of results (by providers) and inputs (by renters) into `dante_files`.

The command service is a queue group, so the chunks of one upload may each reach another
instance, and nothing of an upload lives in an instance's memory:

- Each chunk is one message on `dante.upload.<key>.chunk` in `DANTE_UPLOADS`, with its
  offset in a header. The key names the account, so one account never writes into
  another's upload: `results.<owner>.<job_id>.<attempt>`, `inputs.<renter>.<upload_id>.<h>`
  (`h` from the path, so one upload id cannot mix two paths).
- A chunk is stored only at the offset where the stored ones end, with
  `Nats-Expected-Last-Subject-Sequence` set to the last stored chunk: two instances racing
  on one upload cannot both append, and a chunk sent again is recognised by its offset and
  bytes and answered without being stored twice, however long after. A gap is refused with
  the expected offset; a new offset 0 with other bytes starts the upload over.
- The final chunk names the size and sha256. One instance claims the assembly on
  `dante.upload.<key>.claim` (again with an expected sequence, and renewed while it works,
  so a crashed one's claim lapses), reads the chunks back in order into a local temporary
  file while hashing, and only if size and digest match puts the file into the object store
  under a deterministic name and drops the staged chunks. A large file takes longer than a
  request may: the final chunk is answered `unavailable` while the assembly goes on, and
  sending it again (to any instance) collects the result, or the recorded refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tempfile
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Final, Literal

import anyio
import msgspec
import structlog
from nats.js.errors import APIError

from dante.domain.rejection import Rejected
from dante.events.direct import DirectReader, StoredMessage
from dante.events.store import WRONG_LAST_SEQUENCE
from dante.events.subjects import UPLOAD_PREFIX, UPLOAD_STREAM
from dante.schemas.codec import encode
from dante.schemas.commands import UploadInput, UploadResults
from dante.schemas.results import UploadResult
from dante.schemas.values import FileRef, check_relative_path
from dante.services.files.access import attempt_on
from dante.services.files.inputs import InputLedger

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from nats.js.client import JetStreamContext

    from dante.services.commands import Lookup
    from dante.services.files.objects import Objects

log = structlog.get_logger(__name__)

MAX_RESULTS_BYTES: Final = 2 << 30
MAX_INPUT_BYTES: Final = 1 << 30
#: Where a job's results go in the renter's download, and what `FileRef.path` says.
RESULTS_PATH: Final = "results.tar.gz"
_OFFSET: Final = "Dante-Offset"
_TRIES: Final = 5
_MAX_OBJECT_NAME: Final = 300
#: How much of an upload's staged chunks one read fetches ahead.
_READ_AHEAD: Final = 8 << 20

Chunk = UploadResults | UploadInput


def results_object(job_id: str, attempt: int) -> str:
    return f"results/{job_id}/{attempt}.tar.gz"


def input_object(renter: str, upload_id: str, path: str) -> str:
    return f"inputs/{renter}/{upload_id}/{path}"


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True, slots=True)
class Target:
    """One upload: where its chunks are staged and which file it becomes."""

    key: str
    object: str
    path: str
    limit: int
    description: str
    #: Why an existing object of that name with other contents may not be replaced, if so.
    keep: Rejected | None = None
    #: For an input: the renter whose quota it counts against.
    renter: str | None = None

    @property
    def chunks(self) -> str:
        return f"{UPLOAD_PREFIX}.{self.key}.chunk"

    @property
    def claims(self) -> str:
        return f"{UPLOAD_PREFIX}.{self.key}.claim"

    def ref(self, size: int, sha256: str) -> FileRef:
        return FileRef(object=self.object, path=self.path, size=size, sha256=sha256)


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """Who assembles an upload of a given size and digest, or why that assembly failed."""

    state: Literal["assembling", "failed", "aborted"]
    size: int
    sha256: str
    at: datetime
    by: str = ""
    reason: str = ""
    field: str | None = None


_claim: Final = msgspec.json.Decoder(Claim)


class Uploads:
    """Receives upload chunks and assembles finished uploads into the object store."""

    def __init__(
        self,
        js: JetStreamContext,
        reader: DirectReader,
        objects: Objects,
        *,
        instance: str,
        clock: Callable[[], datetime],
        max_results_bytes: int = MAX_RESULTS_BYTES,
        max_input_bytes: int = MAX_INPUT_BYTES,
        answer_within: float = 3.0,
        claim_ttl: float = 30.0,
        scratch_dir: Path | None = None,
        max_assemblies: int = 4,
        input_quota_bytes: int | None = None,
    ) -> None:
        self._js = js
        self._inputs = InputLedger(js)
        self._input_quota = input_quota_bytes
        self._staged = reader
        self._objects = objects
        self._instance = instance
        self._clock = clock
        self._max_results = max_results_bytes
        self._max_input = max_input_bytes
        self._answer_within = answer_within
        self._claim_ttl = claim_ttl
        self._scratch = scratch_dir
        self._assembling: dict[tuple[str, int, str], asyncio.Task[FileRef]] = {}
        #: Each assembly spools its file to local disk: only a few at once.
        self._slots = asyncio.Semaphore(max_assemblies)

    async def close(self) -> None:
        """Stop assemblies in progress; their claims lapse and another instance takes over."""
        tasks = list(self._assembling.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ── the two kinds of upload ─────────────────────────────────────────────────────────

    async def results(self, identity: str, command: UploadResults, lookup: Lookup) -> UploadResult:
        job = await attempt_on(
            lookup, identity, command.provider_id, command.job_id, command.attempt
        )
        name = results_object(command.job_id, command.attempt)
        keep = None
        if job.results is not None and job.results.object == name:
            keep = Rejected(
                "wrong_state",
                f"the results of attempt {command.attempt} of job {command.job_id} are "
                "already recorded and cannot be replaced",
                "job_id",
            )
        target = Target(
            key=f"results.{identity}.{command.job_id}.{command.attempt}",
            object=name,
            path=RESULTS_PATH,
            limit=self._max_results,
            description=f"results of job {command.job_id}, attempt {command.attempt}",
            keep=keep,
        )
        return await self._receive(target, command)

    async def input(self, identity: str, command: UploadInput) -> UploadResult:
        try:
            path = check_relative_path(command.path)
        except ValueError as exc:
            raise Rejected("invalid", str(exc), "path") from None
        name = input_object(identity, command.upload_id, path)
        if len(name) > _MAX_OBJECT_NAME:
            raise Rejected("invalid", f"path is too long ({len(path)} characters)", "path")
        path_hash = hashlib.sha256(path.encode()).hexdigest()[:16]
        target = Target(
            key=f"inputs.{identity}.{command.upload_id}.{path_hash}",
            object=name,
            path=path,
            limit=self._max_input,
            description=f"input {path} of {identity}",
            renter=identity,
            keep=Rejected(
                "invalid",
                f"upload {command.upload_id} already stored another file; use a new upload id",
                "upload_id",
            ),
        )
        return await self._receive(target, command)

    async def _receive(self, target: Target, command: Chunk) -> UploadResult:
        if command.final:
            return await self._finish(target, command)
        received = await self._store_chunk(target, command.offset, command.data)
        return UploadResult(received=received)

    # ── chunks ──────────────────────────────────────────────────────────────────────────

    def _check_limit(self, target: Target, size: int, field: str) -> None:
        if size > target.limit:
            raise Rejected(
                "invalid",
                f"the file may be at most {_size(target.limit)}; this one would be {size} bytes",
                field,
            )

    async def _store_chunk(self, target: Target, offset: int, data: bytes) -> int:
        """Stage `data` at `offset`; return how many bytes of the upload are staged."""
        for _ in range(_TRIES):
            last = await self._staged.last(target.chunks)
            end = 0 if last is None else _offset(last) + len(last.data)
            if offset == end:
                self._check_limit(target, end + len(data), "data")
                if not data:
                    return end
                if end == 0:
                    # A new upload: forget how an earlier one under this key ended.
                    await self._purge(target.claims)
                expected = 0 if last is None else last.seq
                if await self._publish(target.chunks, data, expected, {_OFFSET: str(offset)}):
                    return end + len(data)
                continue  # another instance stored a chunk meanwhile: look again
            if offset > end:
                raise Rejected(
                    "invalid",
                    f"a chunk is missing: the upload continues at offset {end}, not {offset}",
                    "offset",
                )
            if await self._holds(target, offset, data, last):
                return end  # sent again: already stored
            if offset != 0:
                raise Rejected(
                    "invalid",
                    f"offset {offset} was already received with other bytes; "
                    "send the file again from offset 0",
                    "offset",
                )
            log.info("upload.restarted", key=target.key)
            await self._purge(f"{UPLOAD_PREFIX}.{target.key}.>")
        raise Rejected("conflict", "the upload changed while this chunk was stored; send it again")

    async def _holds(
        self, target: Target, offset: int, data: bytes, last: StoredMessage | None
    ) -> bool:
        """Whether the chunk stored at `offset` has exactly these bytes."""
        if last is not None and _offset(last) == offset:
            return last.data == data
        async with aclosing(self._staged.messages(target.chunks, batch_bytes=_READ_AHEAD)) as ms:
            async for message in ms:
                at = _offset(message)
                if at >= offset:
                    return at == offset and message.data == data
        return False

    async def _publish(
        self, subject: str, payload: bytes, expected: int, headers: dict[str, str] | None = None
    ) -> int | None:
        """Append to the staging stream if `subject` is still at `expected`; the new
        sequence, or None when it moved on."""
        all_headers = {"Nats-Expected-Last-Subject-Sequence": str(expected), **(headers or {})}
        try:
            ack = await self._js.publish(
                subject, payload, stream=UPLOAD_STREAM, headers=all_headers
            )
        except APIError as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:
                return None
            raise
        return int(ack.seq)

    async def _purge(self, subject: str) -> None:
        await self._js.purge_stream(UPLOAD_STREAM, subject=subject)

    # ── the final chunk ─────────────────────────────────────────────────────────────────

    async def _finish(self, target: Target, command: Chunk) -> UploadResult:
        size, sha256 = command.size, command.sha256
        if size is None:
            raise Rejected("invalid", "the final chunk must give the file's size", "size")
        if sha256 is None:
            raise Rejected("invalid", "the final chunk must give the file's sha256", "sha256")
        self._check_limit(target, size, "size")
        done = UploadResult(received=size, file=target.ref(size, sha256))
        if await self._settled(target, size, sha256):
            return done
        try:
            received = await self._store_chunk(target, command.offset, command.data)
        except Rejected:
            # An assembly may have finished (and dropped the staged chunks) since we looked.
            if await self._settled(target, size, sha256):
                return done
            raise
        if received != size:
            raise Rejected(
                "invalid",
                f"{received} bytes arrived, but the final chunk says the file has {size}",
                "size",
            )
        return UploadResult(received=size, file=await self._assemble(target, size, sha256))

    async def _settled(self, target: Target, size: int, sha256: str) -> bool:
        """True when this file is already stored; `Rejected` when this upload was refused or
        may not replace what is stored; False while it is still to be assembled."""
        stored = await self._objects.info(target.object)
        if stored is not None:
            if (stored.size, stored.sha256) == (size, sha256):
                return True
            if target.keep is not None:
                raise target.keep
        last = await self._last_claim(target)
        if last is not None:
            claim = last[1]
            if claim.state == "failed" and (claim.size, claim.sha256) == (size, sha256):
                raise Rejected("invalid", claim.reason, claim.field)
        return False

    async def _last_claim(self, target: Target) -> tuple[int, Claim] | None:
        message = await self._staged.last(target.claims)
        return None if message is None else (message.seq, _claim.decode(message.data))

    async def _assemble(self, target: Target, size: int, sha256: str) -> FileRef:
        key = (target.key, size, sha256)
        task = self._assembling.get(key)
        if task is None:
            claimed = await self._claim(target, size, sha256)
            task = asyncio.create_task(self._build(target, size, sha256, claimed))
            self._assembling[key] = task
            task.add_done_callback(partial(self._built, key))
        # Not cancelled with this request: whoever sends the final chunk again collects it.
        done, _ = await asyncio.wait({task}, timeout=self._answer_within)
        if task in done:
            return task.result()
        raise Rejected(
            "unavailable",
            f"the file ({size} bytes) is being assembled; send the final chunk again shortly",
        )

    def _built(self, key: tuple[str, int, str], task: asyncio.Task[FileRef]) -> None:
        self._assembling.pop(key, None)
        error = None if task.cancelled() else task.exception()
        if error is not None and not isinstance(error, Rejected):
            log.error("upload.assembly_failed", key=key[0], error=repr(error))

    def _claim_body(self, state: Literal["assembling", "aborted"], size: int, sha: str) -> bytes:
        claim = Claim(state=state, size=size, sha256=sha, at=self._clock(), by=self._instance)
        return encode(claim)

    async def _claim(self, target: Target, size: int, sha256: str) -> int:
        busy = Rejected(
            "unavailable",
            "the file is being assembled by another instance; send the final chunk again shortly",
        )
        last = await self._last_claim(target)
        if last is not None:
            claim = last[1]
            age = (self._clock() - claim.at).total_seconds()
            if claim.state == "assembling" and age < self._claim_ttl:
                raise busy
        body = self._claim_body("assembling", size, sha256)
        seq = await self._publish(target.claims, body, 0 if last is None else last[0])
        if seq is None:
            raise busy
        return seq

    async def _hold_claim(self, target: Target, seq: int, size: int, sha256: str) -> None:
        while True:
            await asyncio.sleep(self._claim_ttl / 3)
            renewed = await self._publish(
                target.claims, self._claim_body("assembling", size, sha256), seq
            )
            if renewed is None:
                log.warning("upload.claim_lost", key=target.key)
                return
            seq = renewed

    async def _build(self, target: Target, size: int, sha256: str, claimed: int) -> FileRef:
        holding = asyncio.create_task(self._hold_claim(target, claimed, size, sha256))
        try:
            async with self._slots:
                await self._copy(target, size, sha256)
        except Rejected as rejected:
            await _stop(holding)
            failed = Claim(
                state="failed",
                size=size,
                sha256=sha256,
                at=self._clock(),
                by=self._instance,
                reason=rejected.info.message,
                field=rejected.info.field,
            )
            await self._js.publish(target.claims, encode(failed), stream=UPLOAD_STREAM)
            await self._purge(target.chunks)
            log.info("upload.refused", key=target.key, reason=rejected.info.message)
            raise
        except Exception:
            await _stop(holding)
            with contextlib.suppress(Exception):
                body = self._claim_body("aborted", size, sha256)
                await self._js.publish(target.claims, body, stream=UPLOAD_STREAM)
            raise
        await _stop(holding)
        # The object now answers for the upload: the staged chunks and claims can go.
        await self._purge(f"{UPLOAD_PREFIX}.{target.key}.>")
        log.info("upload.stored", object=target.object, size=size)
        return target.ref(size, sha256)

    async def _copy(self, target: Target, size: int, sha256: str) -> None:
        """Read the staged chunks into a local file, check them, then store the file."""
        digest = hashlib.sha256()
        received = 0
        with tempfile.TemporaryFile(prefix="dante-upload-", dir=self._scratch) as spool:
            staged = self._staged.messages(target.chunks, batch_bytes=_READ_AHEAD)
            async with aclosing(staged) as messages:
                async for message in messages:
                    if _offset(message) != received:
                        raise Rejected(
                            "invalid",
                            f"the staged chunks do not line up at offset {received}; "
                            "send the file again from offset 0",
                            "offset",
                        )
                    digest.update(message.data)
                    await anyio.to_thread.run_sync(spool.write, message.data)
                    received += len(message.data)
            if received != size:
                raise Rejected(
                    "invalid",
                    f"{received} bytes are staged, but the final chunk says {size}; "
                    "send the file again from offset 0",
                    "size",
                )
            actual = digest.hexdigest()
            if actual != sha256:
                raise Rejected(
                    "invalid",
                    f"the bytes received have sha256 {actual}, not {sha256} as the final chunk "
                    "says; nothing was stored, send the file again from offset 0",
                    "sha256",
                )
            await self._within_quota(target, size)
            await self._make_room(size)
            spool.seek(0)
            try:
                await self._objects.put(target.object, spool, target.description)
            except APIError as exc:
                if exc.err_code not in _NO_ROOM:
                    raise
                raise _full(size) from None
            if target.renter is not None:
                await self._inputs.record(target.renter, target.object, size, self._clock())

    async def _within_quota(self, target: Target, size: int) -> None:
        """Refuse an input that would take its renter past its quota of stored inputs."""
        if target.renter is None or self._input_quota is None:
            return
        used = await self._inputs.used(target.renter, besides=target.object)
        if used + size > self._input_quota:
            raise Rejected(
                "quota_exceeded",
                f"{target.renter}'s stored inputs take {used} bytes; {size} more would pass "
                f"its quota of {self._input_quota} bytes. Inputs no waiting or running job "
                "names expire; nothing was stored",
                "size",
            )

    async def _make_room(self, size: int) -> None:
        """Refuse a file that would not fit in `dante_files` (its own limit, apart from the
        log's room), before any of it is stored."""
        free = await self._objects.free_bytes()
        if free is not None and size > free:
            raise _full(size)


#: JetStream's refusals of a message beyond a stream's limits (maximum bytes, resources).
_NO_ROOM: Final = frozenset({10047, 10054, 10077})


def _full(size: int) -> Rejected:
    return Rejected(
        "quota_exceeded",
        f"the platform's file storage has no room for {size} bytes now; nothing was stored, "
        "try again later or ask the operator",
        "size",
    )


def _offset(message: StoredMessage) -> int:
    return int(message.headers.get(_OFFSET, "-1"))


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception as exc:
        log.warning("upload.claim_renewal_failed", error=repr(exc))
