"""What the `DANTE_OUTPUT` stream holds: one message per batch of a job's output lines.

Batches go to `dante.out.<job_id>`, written only by the command service after it checked
that the sending provider runs that attempt; renters read them back through `GetJobLogs`.
"""

from __future__ import annotations

import msgspec

from dante.schemas.commands import OutputLine


class OutputBatch(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    attempt: int
    lines: list[OutputLine]
