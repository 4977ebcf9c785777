"""Who may touch a job's output and files: the checks every request of this package makes.

Each check reads the job and the provider fresh from the log (through `Lookup`), so a job
that has just moved to another provider, or just ended, is judged as it is now.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dante.domain.deciders.agent import ran_on
from dante.domain.rejection import Rejected, unknown_job

if TYPE_CHECKING:
    from dante.domain.model import JobState, ProviderState
    from dante.services.commands import Lookup


async def owned_provider(lookup: Lookup, identity: str, provider_id: str) -> ProviderState:
    """The provider, if it exists and belongs to the acting account."""
    provider = await lookup.provider(provider_id)
    if not provider.exists:
        raise Rejected("unknown_provider", f"there is no provider {provider_id}", "provider_id")
    if provider.owner != identity:
        raise Rejected(
            "not_your_provider", f"provider {provider_id} belongs to another account", "provider_id"
        )
    return provider


async def renters_job(lookup: Lookup, identity: str, job_id: str) -> JobState:
    """The job, if the acting account submitted it. The refusal says nothing about the job:
    another account's reads as one that does not exist."""
    job = await lookup.job(job_id)
    if not job.exists or job.renter != identity:
        raise unknown_job(job_id)
    return job


async def attempt_on(
    lookup: Lookup, identity: str, provider_id: str, job_id: str, attempt: int
) -> JobState:
    """The job, if `attempt` of it runs on the caller's provider, or ran there and ended.

    An ended attempt is accepted so that the last output lines and the results, sent after
    the process stopped, still arrive. An attempt that was taken away (requeued, or placed
    elsewhere since) is not.
    """
    await owned_provider(lookup, identity, provider_id)
    job = await lookup.job(job_id)
    if not ran_on(lookup.world, job, provider_id):
        raise unknown_job(job_id)
    if job.provider_id != provider_id or job.attempt != attempt:
        raise Rejected(
            "wrong_state",
            f"attempt {attempt} of job {job_id} does not run on provider {provider_id}",
            "attempt",
        )
    return job


async def running_on(lookup: Lookup, identity: str, provider_id: str, job_id: str) -> JobState:
    """The job, if its current attempt is assigned to (or running on) the caller's provider."""
    await owned_provider(lookup, identity, provider_id)
    job = await lookup.job(job_id)
    if not job.exists or job.provider_id != provider_id:
        raise unknown_job(job_id)
    if job.ended:
        raise Rejected("job_finished", f"job {job_id} has ended ({job.status})", "job_id")
    if not job.placed:
        raise Rejected("wrong_state", f"job {job_id} is not assigned to a provider now", "job_id")
    return job
