"""Messages between the platform and agents that are not domain events.

Instructions go to `dante.agent.<owner>.<provider_id>.<job_id>`. They are derived from the
log by the dispatcher: an `Assignment` when a job attempt is placed, a `Stop` when it must
end (cancelled, out of funds, past its time, or moved away). An agent's durable consumer
sees only its own subjects.

Heartbeats go to the `dante_heartbeats` KV bucket, one key per provider machine:
`<owner>.<provider_id>` (`dante.events.streams.heartbeat_key`).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from dante.schemas.values import FileRef, JobPayload, Timestamp


class Assignment(msgspec.Struct, frozen=True, gc=False, kw_only=True, tag=True, tag_field="kind"):
    job_id: str
    attempt: int
    renter: str
    name: str = ""
    payload: JobPayload
    inputs: list[FileRef] = msgspec.field(default_factory=list)
    gpu_indices: list[int]
    max_duration_s: int | None = None
    price: int
    assigned_at: Timestamp
    #: Stream sequence of the `JobAssigned` it comes from.
    seq: int


StopCode = Literal["cancelled", "insufficient_funds", "max_duration", "revoked", "operator"]


class Stop(msgspec.Struct, frozen=True, gc=False, kw_only=True, tag=True, tag_field="kind"):
    job_id: str
    attempt: int
    code: StopCode
    reason: str = ""
    seq: int


Instruction = Assignment | Stop


class Heartbeat(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Written by an agent every few seconds under `<owner>.<provider_id>`; both must match
    the key, and the provider must be registered to that owner, for it to count."""

    provider_id: str
    owner: str
    at: Timestamp
    running: list[str] = msgspec.field(default_factory=list)
    agent_version: str = ""
