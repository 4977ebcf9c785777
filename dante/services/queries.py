"""Queries: answered from the read models (projections) and, for quotes, from the market.

Every read goes only to its owner: a renter reads its own jobs and wallet, a provider account
its own wallet; the operator reads the platform summary. Ownership is checked against the
write model read fresh from the log, and the answer waits (briefly) until the read models
include that state, so a client reads its own writes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio

from dante.domain import market
from dante.domain.placement import explain_no_fit, quote
from dante.domain.pricing import model_matches
from dante.domain.rejection import Rejected, unknown_job
from dante.domain.settings import Settings
from dante.projections import queries as q
from dante.projections.queries import Views
from dante.schemas import commands as cmd

if TYPE_CHECKING:
    from dante.projections.runner import ProjectionRunner, StoredViews
    from dante.schemas.views import PlatformSummary
    from dante.services.commands import Lookup

JOB_STATES: Final = frozenset(
    {"queued", "assigned", "running", "completed", "failed", "cancelled", "stopped"}
)
_FRESH_WITHIN: Final = 5.0


@dataclass(frozen=True, slots=True)
class Ask:
    """One query, who asks it, and fresh state to check ownership with."""

    role: str
    identity: str
    command: Any
    lookup: Lookup


Route = Callable[[Ask], Awaitable[Any]]


class ReadModels:
    """The query endpoints of the command service."""

    def __init__(
        self, runner: ProjectionRunner | StoredViews, settings: Settings | None = None
    ) -> None:
        self._runner = runner
        self._settings = settings or Settings()
        self._views: Views | None = None
        # Queries run concurrently: the first ones to arrive must open the views once, not
        # each its own connection (the others would be dropped unclosed).
        self._opening = anyio.Lock()
        self._routes: dict[type[cmd.Command[Any]], Route] = {
            cmd.GetBalance: self._balance,
            cmd.GetWalletHistory: self._history,
            cmd.GetJob: self._job,
            cmd.ListJobs: self._jobs,
            cmd.ListOffers: self._offers,
            cmd.QuoteJob: self._quote,
            cmd.GetPlatformStatus: self._status,
        }
        self.handles: frozenset[type[cmd.Command[Any]]] = frozenset(self._routes)

    async def answer(
        self, role: str, identity: str, command: cmd.Command[Any], lookup: Lookup
    ) -> Any:
        return await self._routes[type(command)](Ask(role, identity, command, lookup))

    async def _open(self) -> Views:
        if self._views is None:
            async with self._opening:
                if self._views is None:
                    await self._runner.wait_for(0, timeout=60)
                    self._views = await Views.open(Path(self._runner.db_path))
        return self._views

    async def close(self) -> None:
        if self._views is not None:
            await self._views.close()
            self._views = None

    async def _fresh(self, seq: int) -> Views:
        """The views, once they include sequence `seq` (what the caller just wrote)."""
        views = await self._open()
        if seq > 0:
            try:
                await self._runner.wait_for(seq, timeout=_FRESH_WITHIN)
            except TimeoutError:
                raise Rejected("unavailable", "the read models are behind; retry") from None
        return views

    async def _balance(self, ask: Ask) -> Any:
        wallet = await ask.lookup.wallet(ask.identity)
        return await q.balance(await self._fresh(wallet.version), ask.identity)

    async def _history(self, ask: Ask) -> Any:
        wallet = await ask.lookup.wallet(ask.identity)
        views = await self._fresh(wallet.version)
        return await q.history(
            views, ask.identity, limit=ask.command.limit, before_seq=ask.command.before_seq
        )

    async def _job(self, ask: Ask) -> Any:
        job = await ask.lookup.job(ask.command.job_id)
        if not job.exists or job.renter != ask.identity:
            raise unknown_job(ask.command.job_id)
        return await q.job(await self._fresh(job.version), ask.command.job_id)

    async def _jobs(self, ask: Ask) -> Any:
        if ask.command.state is not None and ask.command.state not in JOB_STATES:
            raise Rejected(
                "invalid",
                f"unknown state {ask.command.state!r}; one of {', '.join(sorted(JOB_STATES))}",
                "state",
            )
        world = ask.lookup.world
        mine = [j.version for j in world.jobs.values() if j.renter == ask.identity]
        views = await self._fresh(max(mine, default=0))
        return await q.jobs(
            views, renter=ask.identity, state=ask.command.state, limit=ask.command.limit
        )

    async def _offers(self, ask: Ask) -> Any:
        return await q.list_offers(
            await self._open(),
            gpu_model=ask.command.gpu_model,
            min_vram_gb=ask.command.min_vram_gb,
            gpu_count=ask.command.gpu_count,
            max_price=ask.command.max_price,
            location=ask.command.location,
            sort=ask.command.sort,
            include_offline=ask.command.include_offline,
            matcher=model_matches,
            now=datetime.now(UTC),
        )

    async def _status(self, ask: Ask) -> Any:
        if ask.role != "operator":
            raise Rejected("forbidden", "only the operator reads the platform status")
        return await q.platform_summary(await self._open())

    async def summary(self) -> tuple[PlatformSummary, tuple[int, int]]:
        """The platform's summary and its money totals (charged, fees), for the metrics."""
        views = await self._open()
        return await q.platform_summary(views), await q.money_totals(views)

    async def _quote(self, ask: Ask) -> Any:
        slots = market.all_slots(ask.lookup.world)
        req = ask.command.requirements
        found = quote(
            req,
            slots,
            ask.command.duration_s,
            self._settings.fee_bps,
            stop_grace_s=self._settings.stop_grace_s,
        )
        if found is not None:
            return found
        no_fit = explain_no_fit(req, slots)
        reason = no_fit.reason if no_fit else "no provider matches"
        if no_fit is not None and no_fit.code == "price_cap_too_low":
            raise Rejected("price_cap_too_low", reason, "requirements.max_price")
        raise Rejected("no_matching_offer", reason, "requirements")
