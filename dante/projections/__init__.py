"""Read models folded from the log and persisted in SQLite: registry, wallets, jobs.

- `ProjectionRunner` keeps them up to date, live; `rebuild` builds them into a fresh file up
  to a sequence or a time.
- `Views` opens the file read-only for the queries in `dante.projections.queries`, which
  return the Structs of `dante.schemas.views`.
"""

from dante.projections.catalog import PROJECTIONS
from dante.projections.errors import ProjectionError, UnknownEvent
from dante.projections.queries import (
    Views,
    balance,
    history,
    job,
    jobs,
    jobs_for_provider,
    list_offers,
    platform_summary,
    position,
    provider,
)
from dante.projections.rebuild import RebuildReport, rebuild
from dante.projections.runner import ProjectionRunner
from dante.schemas.views import (
    Balance,
    FundsWarning,
    GpuView,
    Hold,
    JobView,
    LedgerEntry,
    OfferRow,
    PlatformSummary,
    ProviderView,
)

__all__ = [
    "PROJECTIONS",
    "Balance",
    "FundsWarning",
    "GpuView",
    "Hold",
    "JobView",
    "LedgerEntry",
    "OfferRow",
    "PlatformSummary",
    "ProjectionError",
    "ProjectionRunner",
    "ProviderView",
    "RebuildReport",
    "UnknownEvent",
    "Views",
    "balance",
    "history",
    "job",
    "jobs",
    "jobs_for_provider",
    "list_offers",
    "platform_summary",
    "position",
    "provider",
    "rebuild",
]
