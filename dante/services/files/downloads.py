"""Downloads of results (by renters) and inputs (by the agent running the job), a chunk at
a time. Each request reads only the chunk messages it returns (see `objects.py`), so any
instance can serve any chunk and nothing is cached."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dante.domain.rejection import Rejected
from dante.schemas.commands import CHUNK_BYTES
from dante.schemas.results import ChunkResult
from dante.services.files.access import renters_job, running_on

if TYPE_CHECKING:
    from dante.schemas.commands import DownloadResults, FetchInput
    from dante.schemas.values import FileRef
    from dante.services.commands import Lookup
    from dante.services.files.objects import Objects


class Downloads:
    def __init__(self, objects: Objects) -> None:
        self._objects = objects

    async def results(self, identity: str, command: DownloadResults, lookup: Lookup) -> ChunkResult:
        job = await renters_job(lookup, identity, command.job_id)
        if job.results is None:
            if job.ended:
                message = f"job {job.job_id} ended ({job.status}) without results"
            else:
                message = f"job {job.job_id} has no results yet: it is {job.status}"
            raise Rejected("wrong_state", message, "job_id")
        # The agent names its results; only a file uploaded as this job's results is served.
        if not job.results.object.startswith(f"results/{job.job_id}/"):
            raise Rejected(
                "wrong_state", f"the results of job {job.job_id} were not uploaded", "job_id"
            )
        return await self._chunk(job.results, command.offset)

    async def input(self, identity: str, command: FetchInput, lookup: Lookup) -> ChunkResult:
        job = await running_on(lookup, identity, command.provider_id, command.job_id)
        ref = next((f for f in job.inputs if f.object == command.object), None)
        if ref is None:
            raise Rejected(
                "forbidden", f"{command.object} is not an input of job {job.job_id}", "object"
            )
        # A renter can name any object in its job; only its own uploads may be read.
        if not ref.object.startswith(f"inputs/{job.renter}/"):
            raise Rejected(
                "forbidden",
                f"{command.object} was not uploaded by the renter of job {job.job_id}",
                "object",
            )
        return await self._chunk(ref, command.offset)

    async def _chunk(self, ref: FileRef, offset: int) -> ChunkResult:
        stored = await self._objects.info(ref.object)
        if stored is None:
            raise Rejected("wrong_state", f"{ref.object} is not stored (any more)", "object")
        if (stored.size, stored.sha256) != (ref.size, ref.sha256):
            raise Rejected(
                "wrong_state",
                f"the stored {ref.object} is not the file the job names (size or sha256 differ)",
                "object",
            )
        if offset > stored.size:
            raise Rejected(
                "invalid", f"offset {offset} is past the end ({stored.size} bytes)", "offset"
            )
        data = await self._objects.read(stored, offset, CHUNK_BYTES)
        return ChunkResult(
            object=ref.object,
            offset=offset,
            data=data,
            size=stored.size,
            sha256=stored.sha256,
            done=offset + len(data) >= stored.size,
        )
