"""Job statements, served to the renter of a job and to the provider accounts that ran it.

A statement is read from the log itself (not from the read models), so what the platform
answers is what anyone reading the log would compute; both parties get the same statement,
and so the same digest, for the same position.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dante.domain.rejection import Rejected, unknown_job
from dante.projections.statement import job_statement
from dante.schemas import commands as cmd

if TYPE_CHECKING:
    from dante.events.store import EventStore
    from dante.schemas.statements import JobStatement
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
            raise unknown_job(job_id)
        statement = await job_statement(self._store, job_id, to_seq=command.to_seq)
        # Whoever asks, on either side, gets the one statement if the job is theirs: the
        # renter's, or one that ran on the account's machines. The account's role is the
        # platform's to know, so a provider need not say it is one. Anyone else is told
        # what they would be told of a job that does not exist.
        if statement is None:
            whole = await job_statement(self._store, job_id)
            if whole is None or not _theirs(whole, job.renter, role, identity):
                raise unknown_job(job_id)
            raise Rejected("unknown_job", f"job {job_id} had not been submitted by then", "to_seq")
        if not _theirs(statement, job.renter, role, identity):
            raise unknown_job(job_id)
        return statement


def _theirs(statement: JobStatement, renter: str, role: str, identity: str) -> bool:
    ran_it = identity in {a.provider_owner for a in statement.attempts}
    if role == "provider":
        return ran_it
    return renter == identity or ran_it
