"""`Files`: the command-service extension for job output and file transfer."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import structlog
from nats.errors import Error as NatsError

from dante.domain.rejection import Rejected
from dante.events.direct import DirectReader
from dante.events.errors import EventStoreError
from dante.events.private import private_dir
from dante.events.subjects import UPLOAD_STREAM
from dante.schemas import commands as cmd
from dante.services.commands import utcnow
from dante.services.files.downloads import Downloads
from dante.services.files.objects import Objects, ObjectStoreError
from dante.services.files.output import Output
from dante.services.files.uploads import MAX_INPUT_BYTES, MAX_RESULTS_BYTES, Uploads

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from pathlib import Path

    from nats.aio.client import Client as NATS

    from dante.services.commands import Lookup

log = structlog.get_logger(__name__)


class Files:
    """Serves job output, uploads and downloads for the command service.

    `CommandService(nc, store, extensions=[Files(nc)])`. Every request is checked against the
    job and provider read fresh from the log; nothing is kept in memory between requests
    but assemblies in progress, so any instance of the service can take any request.
    """

    handles: frozenset[type[cmd.Command[Any]]] = frozenset(
        {
            cmd.RecordOutput,
            cmd.GetJobLogs,
            cmd.UploadResults,
            cmd.UploadInput,
            cmd.DownloadResults,
            cmd.FetchInput,
        }
    )

    def __init__(
        self,
        nc: NATS,
        *,
        max_results_bytes: int = MAX_RESULTS_BYTES,
        max_input_bytes: int = MAX_INPUT_BYTES,
        answer_within: float = 3.0,
        claim_ttl: float = 30.0,
        scratch_dir: Path | None = None,
        max_assemblies: int = 4,
        clock: Callable[[], datetime] = utcnow,
        timeout: float = 5.0,
        input_quota_bytes: int | None = None,
    ) -> None:
        """`answer_within`: how long a final chunk waits for its assembly before it is
        answered `unavailable` (send it again to collect the file). `claim_ttl`: after how
        long without renewal another instance takes over an assembly. `scratch_dir`: where
        assemblies spool files (default: the system's temporary folder), `max_assemblies`
        of them at once, each as large as its upload. `input_quota_bytes`: how much one
        renter's stored inputs may take (None: no quota)."""
        if scratch_dir is not None:
            private_dir(scratch_dir)
        js = nc.jetstream(timeout=timeout)
        objects = Objects(nc, js, timeout=timeout)
        self.output = Output(nc, js, timeout=timeout)
        self.uploads = Uploads(
            js,
            DirectReader(nc, UPLOAD_STREAM, timeout=timeout),
            objects,
            instance=uuid.uuid4().hex[:12],
            clock=clock,
            max_results_bytes=max_results_bytes,
            max_input_bytes=max_input_bytes,
            answer_within=answer_within,
            claim_ttl=claim_ttl,
            scratch_dir=scratch_dir,
            max_assemblies=max_assemblies,
            input_quota_bytes=input_quota_bytes,
        )
        self.downloads = Downloads(objects)

    async def close(self) -> None:
        await self.uploads.close()

    async def answer(
        self, role: str, identity: str, command: cmd.Command[Any], lookup: Lookup
    ) -> Any:
        try:
            return await self._answer(identity, command, lookup)
        except (NatsError, EventStoreError, ObjectStoreError) as exc:
            # JetStream said no (a full staging area, a lost leader) or did not answer.
            log.warning("files.unavailable", verb=command.VERB, role=role, error=repr(exc))
            raise Rejected("unavailable", "file storage is unavailable; retry shortly") from None

    async def _answer(self, identity: str, command: cmd.Command[Any], lookup: Lookup) -> Any:
        match command:
            case cmd.RecordOutput():
                return await self.output.record(identity, command, lookup)
            case cmd.GetJobLogs():
                return await self.output.page(identity, command, lookup)
            case cmd.UploadResults():
                return await self.uploads.results(identity, command, lookup)
            case cmd.UploadInput():
                return await self.uploads.input(identity, command)
            case cmd.DownloadResults():
                return await self.downloads.results(identity, command, lookup)
            case cmd.FetchInput():
                return await self.downloads.input(identity, command, lookup)
        raise Rejected("unknown_verb", f"{command.VERB} is not served by Files")
