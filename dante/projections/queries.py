"""Read queries over the projections' SQLite file, each returning result Structs.

They read through `Views`: one read-only connection, and a snapshot (one read transaction)
per query, so a query that reads several tables sees them at one position even while the
runner writes. Each query reads only the tables of the projection it is about, except the
platform summary, which counts across all three.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import aiosqlite
import anyio
import msgspec

from dante.projections import jobs as jobs_model
from dante.projections import registry, wallets
from dante.projections.integrity import FileId, file_id
from dante.projections.matching import ModelMatcher, tokens_match
from dante.projections.projector import POSITIONS
from dante.projections.sqlite import connect
from dante.projections.tables import Row, Table, from_ms, to_ms
from dante.schemas.money import periods
from dante.schemas.values import PLATFORM_WALLET, FileRef, JobRequirements
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

_requirements = msgspec.json.Decoder(JobRequirements)
_indices = msgspec.json.Decoder(list[int])
_file_ref = msgspec.json.Decoder(FileRef)


class Views:
    """A read-only handle on the projections' file, for the read queries.

    Opened with `open(path)`, it reads whatever file is at `path`: when the runner replaces
    a damaged file with a new one, the next query opens the new one (until then, queries
    read the old).
    """

    def __init__(
        self, db: aiosqlite.Connection, path: Path | None = None, file: FileId | None = None
    ) -> None:
        self._db = db
        self._path = path
        self._file = file
        self._lock = anyio.Lock()

    @classmethod
    async def open(cls, path: str | Path) -> Self:
        """Open the file at `path`, which must exist (a reader never creates it)."""
        path = Path(path)
        file = file_id(path)  # before opening: a file replaced meanwhile is opened again
        return cls(await connect(path, readonly=True, create=False), path, file)

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.close()

    async def _follow_replacement(self) -> None:
        assert self._path is not None
        current = file_id(self._path)
        if current is None or current == self._file:
            return
        try:
            db = await connect(self._path, readonly=True, create=False)
        except sqlite3.Error:
            return  # gone again, or not readable yet: the old one meanwhile
        old, self._db, self._file = self._db, db, current
        with anyio.CancelScope(shield=True):
            await old.close()

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection inside one read transaction: every read sees the same position."""
        async with self._lock:
            if self._path is not None:
                await self._follow_replacement()
            await self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                with anyio.CancelScope(shield=True):
                    await self._db.execute("COMMIT")


async def _rows(
    db: aiosqlite.Connection, table: Table[Any], where: str = "", params: Sequence[Any] = ()
) -> list[Any]:
    async with db.execute(f"{table.select_sql} {where}", params) as cursor:
        return [table.from_db(values) for values in await cursor.fetchall()]


def _at(ms: int | None) -> datetime | None:
    return None if ms is None else from_ms(ms)


async def position(views: Views) -> int:
    """The sequence every projection's stored rows include."""
    async with views.snapshot() as db, db.execute(f"SELECT min(seq) FROM {POSITIONS}") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


# ── registry ────────────────────────────────────────────────────────────────────────────


def uptime_ppm(provider: registry.ProviderRow, now_ms: int) -> int:
    """Share of the time since first registration that the provider was online."""
    online = provider.online_ms
    if provider.online_since_ms is not None:
        online += max(0, now_ms - provider.online_since_ms)
    first = provider.first_registered_at_ms
    if first is None or now_ms <= first:
        return registry.PPM if provider.status == registry.ONLINE else 0
    return min(registry.PPM, online * registry.PPM // (now_ms - first))


def _is_free(provider: registry.ProviderRow, gpu: registry.GpuRow) -> bool:
    return (
        provider.status == registry.ONLINE
        and gpu.offered
        and gpu.available
        and gpu.healthy
        and gpu.busy_job_id is None
    )


async def list_offers(
    views: Views,
    *,
    gpu_model: str | None = None,
    min_vram_gb: int | None = None,
    gpu_count: int | None = None,
    max_price: int | None = None,
    location: str | None = None,
    sort: Literal["price", "reliability"] = "price",
    include_offline: bool = False,
    matcher: ModelMatcher = tokens_match,
    now: datetime | None = None,
) -> list[OfferRow]:
    """Providers offering GPUs that match, one row each.

    A GPU matches when it is offered as available, its model matches `gpu_model`, it has at
    least `min_vram_gb` and costs at most `max_price` per GPU-hour. With `gpu_count`, only
    providers with at least that many matching GPUs free now are listed. Offline providers
    are listed only with `include_offline`; deregistered ones never.
    """
    now_ms = to_ms(now or datetime.now(UTC))
    # Offline providers only on request; deregistered ones never.
    status_sql = "WHERE status != ?" if include_offline else "WHERE status = ?"
    status = registry.DEREGISTERED if include_offline else registry.ONLINE
    async with views.snapshot() as db:
        listed: list[registry.ProviderRow] = await _rows(
            db, registry.PROVIDERS, status_sql, (status,)
        )
        providers = {row.provider_id: row for row in listed}
        gpu_where = "WHERE offered = 1 AND available = 1"
        gpu_params: list[Any] = []
        if min_vram_gb is not None:
            gpu_where += " AND vram_gb >= ?"
            gpu_params.append(min_vram_gb)
        if max_price is not None:
            gpu_where += " AND price_udgpu <= ?"
            gpu_params.append(max_price)
        gpus: list[registry.GpuRow] = await _rows(db, registry.GPUS, gpu_where, gpu_params)
    wanted_place = location.casefold() if location else None
    matching: dict[str, list[registry.GpuRow]] = {}
    for gpu in gpus:
        provider = providers.get(gpu.provider_id)
        if provider is None or (gpu_model is not None and not matcher(gpu_model, gpu.model)):
            continue
        if wanted_place is not None and wanted_place not in provider.location.casefold():
            continue
        matching.setdefault(gpu.provider_id, []).append(gpu)
    offers: list[OfferRow] = []
    for provider_id, found in matching.items():
        provider = providers[provider_id]
        free = sum(1 for gpu in found if _is_free(provider, gpu))
        if gpu_count is not None and free < gpu_count:
            continue
        prices = [gpu.price_udgpu for gpu in found]
        offers.append(
            OfferRow(
                provider_id=provider_id,
                name=provider.name,
                owner=provider.owner,
                location=provider.location,
                status=provider.status,
                models=sorted({gpu.model for gpu in found}),
                vram_gb=min(gpu.vram_gb for gpu in found),
                gpus_free=free,
                gpus_total=len(found),
                price_min_udgpu=min(prices),
                price_max_udgpu=max(prices),
                reliability_ppm=provider.reliability_ppm,
                jobs_completed=provider.jobs_completed,
                jobs_lost=provider.jobs_lost,
                uptime_ppm=uptime_ppm(provider, now_ms),
                simulated=any(gpu.simulated for gpu in found),
            )
        )
    if sort == "reliability":
        offers.sort(key=lambda o: (-o.reliability_ppm, o.price_min_udgpu, o.provider_id))
    else:
        offers.sort(key=lambda o: (o.price_min_udgpu, -o.reliability_ppm, o.provider_id))
    return offers


async def provider(
    views: Views, provider_id: str, *, now: datetime | None = None
) -> ProviderView | None:
    """One provider with all its GPUs, or None."""
    async with views.snapshot() as db:
        found = await _rows(db, registry.PROVIDERS, "WHERE provider_id = ?", (provider_id,))
        gpus = await _rows(
            db, registry.GPUS, "WHERE provider_id = ? ORDER BY gpu_index", (provider_id,)
        )
    if not found:
        return None
    row: registry.ProviderRow = found[0]
    return ProviderView(
        provider_id=row.provider_id,
        owner=row.owner,
        name=row.name,
        location=row.location,
        payout_address=row.payout_address,
        host=row.host,
        agent_version=row.agent_version,
        status=row.status,
        status_reason=row.status_reason,
        first_registered_at=_at(row.first_registered_at_ms),
        registered_at=_at(row.registered_at_ms),
        last_seen=_at(row.last_seen_ms),
        online_since=_at(row.online_since_ms),
        online_ms=row.online_ms,
        uptime_ppm=uptime_ppm(row, to_ms(now or datetime.now(UTC))),
        jobs_completed=row.jobs_completed,
        jobs_lost=row.jobs_lost,
        reliability_ppm=row.reliability_ppm,
        gpus=[
            GpuView(
                index=gpu.gpu_index,
                uuid=gpu.uuid,
                vendor=gpu.vendor,
                model=gpu.model,
                vram_mb=gpu.vram_mb,
                vram_gb=gpu.vram_gb,
                simulated=gpu.simulated,
                offered=gpu.offered,
                available=gpu.available,
                price_udgpu=gpu.price_udgpu,
                busy_job_id=gpu.busy_job_id,
                busy_attempt=gpu.busy_attempt,
                healthy=gpu.healthy,
                free=_is_free(row, gpu),
            )
            for gpu in gpus
        ],
    )


# ── wallets ─────────────────────────────────────────────────────────────────────────────


async def _live_warnings(
    db: aiosqlite.Connection, warnings: list[wallets.WarningRow]
) -> list[wallets.WarningRow]:
    """The warnings whose attempt still holds its GPUs. Billing clears a warning when its
    attempt ends (`LowFundsCleared`), but logs written before it did may still hold some."""
    if not warnings:
        return warnings
    ids = sorted({w.job_id for w in warnings})
    marks = ", ".join("?" * len(ids))
    rows = await _rows(db, jobs_model.JOBS, f"WHERE job_id IN ({marks})", ids)
    placed = {(r.job_id, r.attempts) for r in rows if r.state in ("assigned", "running")}
    return [w for w in warnings if (w.job_id, w.attempt) in placed]


async def balance(views: Views, wallet_id: str, now: datetime | None = None) -> Balance:
    """A wallet's balance, open holds and open warnings, its budgets and what `now`'s day
    and month spent of them; an unknown wallet has zero."""
    async with views.snapshot() as db:
        found = await _rows(db, wallets.WALLETS, "WHERE wallet_id = ?", (wallet_id,))
        holds = await _rows(
            db, wallets.HOLDS, "WHERE wallet_id = ? ORDER BY job_id, attempt", (wallet_id,)
        )
        warnings = await _rows(
            db, wallets.WARNINGS, "WHERE wallet_id = ? ORDER BY seq", (wallet_id,)
        )
        warnings = await _live_warnings(db, warnings)
    if not found:
        role = "platform" if wallet_id == PLATFORM_WALLET else "renter"
        return Balance(wallet_id=wallet_id, role=role)
    row: wallets.WalletRow = found[0]
    day, month = periods(now or datetime.now(UTC))
    return Balance(
        budget_daily_udgpu=row.budget_daily_udgpu,
        budget_monthly_udgpu=row.budget_monthly_udgpu,
        spent_today_udgpu=row.spent_day_udgpu if row.spent_day == day else 0,
        spent_this_month_udgpu=row.spent_month_udgpu if row.spent_month == month else 0,
        wallet_id=wallet_id,
        role=row.role,
        available_udgpu=row.available_udgpu,
        held_udgpu=row.held_udgpu,
        total_udgpu=row.available_udgpu + row.held_udgpu,
        pending_withdrawal_udgpu=row.pending_withdrawal_udgpu,
        deposited_udgpu=row.deposited_udgpu,
        withdrawn_udgpu=row.withdrawn_udgpu,
        charged_udgpu=row.charged_udgpu,
        earned_udgpu=row.earned_udgpu,
        warnings_total=row.warnings_total,
        warnings=[
            FundsWarning(
                seq=w.seq,
                job_id=w.job_id,
                attempt=w.attempt,
                needed_udgpu=w.needed_udgpu,
                available_udgpu=w.available_udgpu,
                stop_at=from_ms(w.stop_at_ms),
                at=from_ms(w.at_ms),
                budget=w.budget,
            )
            for w in warnings
        ],
        holds=[Hold(job_id=h.job_id, attempt=h.attempt, held_udgpu=h.held_udgpu) for h in holds],
    )


async def history(
    views: Views, wallet_id: str, *, limit: int = 100, before_seq: int | None = None
) -> list[LedgerEntry]:
    """A wallet's ledger, newest first; page back with `before_seq` = the last entry's seq."""
    where = "WHERE wallet_id = ?"
    params: list[Any] = [wallet_id]
    if before_seq is not None:
        where += " AND seq < ?"
        params.append(before_seq)
    async with views.snapshot() as db:
        rows: list[wallets.LedgerRow] = await _rows(
            db, wallets.LEDGER, f"{where} ORDER BY seq DESC LIMIT ?", [*params, limit]
        )
    return [
        LedgerEntry(
            seq=row.seq,
            wallet_id=row.wallet_id,
            kind=row.kind,
            amount_udgpu=row.amount_udgpu,
            available_delta_udgpu=row.available_delta_udgpu,
            held_delta_udgpu=row.held_delta_udgpu,
            job_id=row.job_id,
            attempt=row.attempt,
            reference=row.reference,
            at=from_ms(row.at_ms),
            signature=row.signature,
        )
        for row in rows
    ]


# ── jobs ────────────────────────────────────────────────────────────────────────────────


async def _simulated_providers(db: aiosqlite.Connection) -> set[str]:
    """Providers that offer simulated GPUs: their jobs' telemetry is made up."""
    query = f"SELECT DISTINCT provider_id FROM {registry.GPUS.name} WHERE simulated"
    async with db.execute(query) as cursor:
        return {str(row[0]) for row in await cursor.fetchall()}


def _job_view(row: jobs_model.JobRow, simulated: set[str] | None = None) -> JobView:
    return JobView(
        simulated=row.provider_id is not None and row.provider_id in (simulated or set()),
        job_id=row.job_id,
        renter=row.renter,
        name=row.name,
        state=row.state,
        submitted_seq=row.submitted_seq,
        submitted_at=_at(row.submitted_at_ms),
        requirements=_requirements.decode(row.requirements_json),
        payload_kind=row.payload_kind,
        image=row.image,
        interpreter=row.interpreter,
        queue_code=row.queue_code,
        queue_reason=row.queue_reason,
        attempts=row.attempts,
        provider_id=row.provider_id,
        provider_owner=row.provider_owner,
        gpu_indices=_indices.decode(row.gpu_indices_json),
        price_udgpu=row.price_udgpu,
        fee_bps=row.fee_bps,
        assigned_at=_at(row.assigned_at_ms),
        accepted=row.accepted,
        started_at=_at(row.started_at_ms),
        attempt_started_at=_at(row.attempt_started_at_ms),
        finished_at=_at(row.finished_at_ms),
        gpu_ms=row.gpu_ms,
        attempt_gpu_ms=row.attempt_gpu_ms,
        last_tick_seq=row.last_tick_seq,
        charged_udgpu=row.charged_udgpu,
        cancel_requested=row.cancel_requested,
        end_code=row.end_code,
        end_reason=row.end_reason,
        exit_code=row.exit_code,
        results=None if row.results_json is None else _file_ref.decode(row.results_json),
        updated_seq=row.updated_seq,
    )


async def job(views: Views, job_id: str) -> JobView | None:
    async with views.snapshot() as db:
        found = await _rows(db, jobs_model.JOBS, "WHERE job_id = ?", (job_id,))
        simulated = await _simulated_providers(db) if found else set()
    return _job_view(found[0], simulated) if found else None


async def _job_list(
    views: Views, column: str | None, value: str | None, state: str | None, limit: int
) -> list[JobView]:
    conditions: list[str] = []
    params: list[Any] = []
    if column is not None:
        conditions.append(f"{column} = ?")
        params.append(value)
    if state is not None:
        conditions.append("state = ?")
        params.append(state)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    async with views.snapshot() as db:
        rows: list[Row] = await _rows(
            db, jobs_model.JOBS, f"{where} ORDER BY submitted_seq DESC LIMIT ?", [*params, limit]
        )
        simulated = await _simulated_providers(db) if rows else set()
    return [_job_view(row, simulated) for row in rows if isinstance(row, jobs_model.JobRow)]


async def jobs(
    views: Views, *, renter: str | None = None, state: str | None = None, limit: int = 100
) -> list[JobView]:
    """Jobs, newest first: a renter's, or everyone's; optionally only those in one state."""
    return await _job_list(views, None if renter is None else "renter", renter, state, limit)


async def jobs_for_provider(
    views: Views, provider_id: str, *, state: str | None = None, limit: int = 100
) -> list[JobView]:
    """Jobs placed on a provider (its current attempt, or where it ended), newest first."""
    return await _job_list(views, "provider_id", provider_id, state, limit)


# ── the platform ────────────────────────────────────────────────────────────────────────


async def platform_summary(views: Views) -> PlatformSummary:
    """Providers by status, GPUs free and busy, jobs by state: for `dante status`."""
    async with views.snapshot() as db:
        providers = {row.provider_id: row for row in await _rows(db, registry.PROVIDERS)}
        gpus: list[registry.GpuRow] = await _rows(db, registry.GPUS)
        async with db.execute(
            f"SELECT state, count(*) FROM {jobs_model.JOBS.name} GROUP BY state"
        ) as cur:
            job_states = {str(state): int(count) for state, count in await cur.fetchall()}
        async with db.execute(f"SELECT count(*) FROM {wallets.WALLETS.name}") as cur:
            wallet_count = await cur.fetchone()
        async with db.execute(f"SELECT min(seq) FROM {POSITIONS}") as cur:
            at = await cur.fetchone()
    listed = [
        (providers[gpu.provider_id], gpu)
        for gpu in gpus
        if gpu.provider_id in providers
        and providers[gpu.provider_id].status != registry.DEREGISTERED
    ]
    return PlatformSummary(
        position=int(at[0]) if at and at[0] is not None else 0,
        providers=dict(Counter(row.status for row in providers.values())),
        gpus_total=len(listed),
        gpus_free=sum(1 for p, gpu in listed if _is_free(p, gpu)),
        gpus_busy=sum(1 for _, gpu in listed if gpu.busy_job_id is not None),
        jobs=job_states,
        wallets=int(wallet_count[0]) if wallet_count else 0,
    )


async def money_totals(views: Views) -> tuple[int, int]:
    """Everything charged to renters so far, and the platform's fees of it, in µdGPU."""
    table = wallets.WALLETS.name
    async with (
        views.snapshot() as db,
        db.execute(
            f"SELECT coalesce(sum(charged_udgpu), 0), "
            f"coalesce(sum(CASE WHEN role = 'platform' THEN earned_udgpu END), 0) FROM {table}"
        ) as cur,
    ):
        row = await cur.fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)
