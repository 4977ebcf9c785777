"""Job output: providers append batches of lines, renters page through them.

Each `RecordOutput` becomes one message on `dante.out.<job_id>` in `DANTE_OUTPUT` (split in
two only if it would not fit in a NATS message), with a message id made from the sending
account and the command id, so a batch sent again within the stream's duplicate window is
stored once.

A page's cursor (`after`, `next`) is `seq * 4096 + n`: the stream sequence of a batch and how
many of its lines the reader has already seen. A batch holds at most 2000 lines, so `n`
always fits. Batches that expired (the stream keeps output for a limited time and size) are
skipped: the cursor still moves forward.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import TYPE_CHECKING, Final

import msgspec
import structlog

from dante.events.direct import DirectReader
from dante.events.subjects import OUTPUT_STREAM, output_subject
from dante.schemas.codec import encode
from dante.schemas.output import OutputBatch
from dante.schemas.results import LogLine, LogPage, OutputResult
from dante.services.files.access import attempt_on, renters_job

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js.client import JetStreamContext

    from dante.schemas.commands import GetJobLogs, OutputLine, RecordOutput
    from dante.services.commands import Lookup

log = structlog.get_logger(__name__)

#: A cursor is `seq * SPAN + lines already read from that batch`.
SPAN: Final = 4096
#: Room left in a NATS message for headers (a stored batch) or the reply's envelope (a page).
_HEADROOM: Final = 16 * 1024
_batch: Final = msgspec.json.Decoder(OutputBatch)


def cursor(seq: int, read: int = 0) -> int:
    return seq * SPAN + read


class Output:
    """Writes and reads `DANTE_OUTPUT` on behalf of providers and renters."""

    def __init__(self, nc: NATS, js: JetStreamContext, *, timeout: float = 5.0) -> None:
        self._nc = nc
        self._js = js
        self._reader = DirectReader(nc, OUTPUT_STREAM, timeout=timeout)

    async def record(self, identity: str, command: RecordOutput, lookup: Lookup) -> OutputResult:
        await attempt_on(lookup, identity, command.provider_id, command.job_id, command.attempt)
        subject = output_subject(command.job_id)
        parts = self._parts(command.attempt, command.lines)
        for n, payload in enumerate(parts):
            msg_id = f"out:{identity}:{command.command_id}:{n}"
            await self._js.publish(
                subject, payload, stream=OUTPUT_STREAM, headers={"Nats-Msg-Id": msg_id}
            )
        log.debug("output.recorded", job_id=command.job_id, lines=len(command.lines))
        return OutputResult(stored=len(command.lines))

    def _parts(self, attempt: int, lines: list[OutputLine]) -> list[bytes]:
        """The batch as one message, or as several when one would exceed the server's limit."""
        payload = encode(OutputBatch(attempt=attempt, lines=lines))
        if len(payload) + _HEADROOM <= self._nc.max_payload or len(lines) == 1:
            return [payload]
        half = len(lines) // 2
        return self._parts(attempt, lines[:half]) + self._parts(attempt, lines[half:])

    async def page(self, identity: str, command: GetJobLogs, lookup: Lookup) -> LogPage:
        job = await renters_job(lookup, identity, command.job_id)
        seq, skip = divmod(command.after, SPAN)
        seq = max(seq, 1)
        lines: list[LogLine] = []
        position = command.after
        # The page must fit in one reply.
        budget = self._nc.max_payload - _HEADROOM
        used = 0
        # Every batch holds a line, so `limit` lines need at most `limit + 1` batches.
        messages = self._reader.messages(
            output_subject(command.job_id), seq, limit=command.limit + 1, batch_bytes=budget
        )
        async with aclosing(messages):
            async for message in messages:
                batch = _batch.decode(message.data)
                read = skip if message.seq == seq else 0
                for line in batch.lines[read:]:
                    item = LogLine(
                        at=line.at, stream=line.stream, text=line.text, attempt=batch.attempt
                    )
                    cost = len(encode(item)) + 1
                    if len(lines) >= command.limit or (lines and used + cost > budget):
                        break
                    lines.append(item)
                    used += cost
                    read += 1
                if read < len(batch.lines):
                    position = cursor(message.seq, read)
                    break
                position = cursor(message.seq + 1)
                if len(lines) >= command.limit:
                    break
        # `ended` as read before the lines: every line stored before the job ended is then
        # on this page or a later one, so a follower may stop at the first empty page.
        return LogPage(job_id=command.job_id, lines=lines, next=position, ended=job.ended)
