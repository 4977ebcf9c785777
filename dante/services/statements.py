"""Job statements, served to the renter of a job and to the provider accounts that ran it.

A statement is read from the log itself (not from the read models), so what the platform
answers is what anyone reading the log would compute; both parties get the same statement,
and so the same digest, for the same position.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dante.domain.rejection import Rejected
from dante.projections.statement import job_statement
from dante.schemas import commands as cmd

if TYPE_CHECKING:
    from dante.events.store import EventStore
    from dante.services.commands import Lookup


class Statements:
    """The `statement` query of renters and providers (an `Extension` of the service)."""

    handles: frozenset[type[cmd.Command[Any]]] = frozenset(
        {cmd.GetJobStatement, cmd.GetProviderJobStatement}
    )

    def __init__(self, store: EventStore) -> None:
        self._store = store

    async def answer(
        self, role: str, identity: str, command: cmd.Command[Any], lookup: Lookup
    ) -> Any:
        assert isinstance(command, cmd.GetJobStatement | cmd.GetProviderJobStatement)
        job_id = command.job_id
        job = await lookup.job(job_id)
        if not job.exists:
            raise Rejected("unknown_job", f"there is no job {job_id}", "job_id")
        statement = await job_statement(self._store, job_id, to_seq=command.to_seq)
        if statement is None:
            raise Rejected("unknown_job", f"job {job_id} had not been submitted by then", "to_seq")
        # Whoever asks, on either side, gets the one statement if the job is theirs: the
        # renter's, or one that ran on the account's machines. The account's role is the
        # platform's to know, so a provider need not say it is one.
        ran_it = identity in {a.provider_owner for a in statement.attempts}
        if role == "provider" and not ran_it:
            raise Rejected("not_your_job", f"job {job_id} never ran on your providers", "job_id")
        if role == "renter" and job.renter != identity and not ran_it:
            raise Rejected("not_your_job", f"job {job_id} is not yours", "job_id")
        return statement
