"""The dispatcher: turns the log into instructions for agents (assignments and stops).

Instructions are derived, not decided: each comes from one event and carries a message id
made from that event's sequence, so a redelivered event re-publishes nothing new. An agent's
durable consumer on `dante.agent.<owner>.<provider>.>` sees only its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Final

from dante.domain.decision import Decision, Instruction
from dante.domain.model import World
from dante.events.codec import Recorded
from dante.events.subjects import EVENT_PREFIX, dispatch_subject
from dante.schemas import dispatch
from dante.schemas import events as ev
from dante.schemas.codec import encode

NAME: Final = "dispatcher"

_STOP_CODES: Final[dict[str, dispatch.StopCode]] = {
    "insufficient_funds": "insufficient_funds",
    # The agent knows one money stop; the reason says it was the budget.
    "budget_reached": "insufficient_funds",
    "max_duration": "max_duration",
    "provider_timeout": "revoked",
    "operator": "operator",
}


class Dispatcher:
    name = NAME
    #: Only job events trigger it: its durable consumer gets nothing else.
    subjects = f"{EVENT_PREFIX}.job.>"
    #: The event types `decide` acts on; the runner acknowledges others unread.
    triggers = frozenset(
        kind.__name__
        for kind in (
            ev.JobAssigned,
            ev.JobCancelRequested,
            ev.JobStopped,
            ev.JobRequeued,
            ev.JobFailed,
            ev.JobCancelled,
        )
    )

    def decide(self, world: World, recorded: Recorded, now: datetime) -> Iterator[Decision]:
        del now
        event, seq = recorded.event, recorded.seq
        match event:
            case ev.JobAssigned():
                job = world.job(event.job_id)
                if job.ended or job.attempt != event.attempt or job.requirements is None:
                    return  # long gone: nothing for the agent to do
                assert job.payload is not None
                assignment = dispatch.Assignment(
                    job_id=job.job_id,
                    attempt=event.attempt,
                    renter=job.renter,
                    name=job.name,
                    payload=job.payload,
                    inputs=list(job.inputs),
                    gpu_indices=list(event.gpu_indices),
                    max_duration_s=job.requirements.max_duration_s,
                    price=event.price,
                    assigned_at=event.at,
                    seq=seq,
                )
                yield self._send(event.provider_owner, event.provider_id, assignment, seq)
            case ev.JobCancelRequested():
                job = world.job(event.job_id)
                if job.placed:
                    yield self._stop(
                        world,
                        job_id=job.job_id,
                        attempt=job.attempt,
                        code="cancelled",
                        reason=event.reason,
                        seq=seq,
                    )
            case ev.JobStopped():
                if event.attempt is not None:
                    code = _STOP_CODES.get(event.code, "operator")
                    yield self._stop(
                        world,
                        job_id=event.job_id,
                        attempt=event.attempt,
                        code=code,
                        reason=event.reason,
                        seq=seq,
                    )
            case ev.JobRequeued():
                yield self._stop(
                    world,
                    job_id=event.job_id,
                    attempt=event.attempt,
                    code="revoked",
                    reason=event.reason,
                    seq=seq,
                )
            case ev.JobFailed() | ev.JobCancelled() if event.attempt is not None:
                # Ended by the platform (gave up, cancelled while lost): tell the agent too.
                if not event.cause.startswith("cmd:provider:"):
                    yield self._stop(
                        world,
                        job_id=event.job_id,
                        attempt=event.attempt,
                        code="revoked",
                        reason=event.reason,
                        seq=seq,
                    )
            case _:
                return

    def due(self, world: World, now: datetime) -> Iterator[Decision]:
        del world, now
        return iter(())

    @staticmethod
    def _send(
        owner: str, provider_id: str, instruction: dispatch.Instruction, seq: int
    ) -> Decision:
        subject = dispatch_subject(owner, provider_id, instruction.job_id)
        return Decision(
            instructions=[
                Instruction(subject=subject, payload=encode(instruction), msg_id=f"{NAME}:{seq}")
            ]
        )

    def _stop(
        self,
        world: World,
        *,
        job_id: str,
        attempt: int,
        code: dispatch.StopCode,
        reason: str,
        seq: int,
    ) -> Decision:
        book = world.books.get((job_id, attempt))
        if book is None:
            return Decision()
        stop = dispatch.Stop(job_id=job_id, attempt=attempt, code=code, reason=reason, seq=seq)
        return self._send(book.provider_owner, book.provider_id, stop, seq)
