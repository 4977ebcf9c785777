"""The write model: each aggregate's state as a pure fold of its events.

The command service and the handlers decide against these states; the projections build
their own read models from the same events. `evolve_*` functions never do I/O and never
raise on a rule broken by the log (a tampered log is for the auditor to flag); they raise
only for an event that does not belong to their aggregate.
"""

from dante.domain.model.job import JobState, JobStatus, evolve_job
from dante.domain.model.provider import ProviderState, evolve_provider
from dante.domain.model.wallet import WalletState, evolve_wallet
from dante.domain.model.world import World

__all__ = [
    "JobState",
    "JobStatus",
    "ProviderState",
    "WalletState",
    "World",
    "evolve_job",
    "evolve_provider",
    "evolve_wallet",
]
