"""Auditing a log: read it once from sequence 1 with the stored headers, check every event,
then compare the live views with a replay, and report."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from dante.collector import collector_paused
from dante.events.codec import decode_event
from dante.events.store import EventStore
from dante.projections.audit.auditor import SETTLE_GRACE, Auditor
from dante.projections.audit.report import AuditReport, ViewsComparison
from dante.projections.audit.views import compare_views
from dante.schemas.codec import DecodeError

#: Called after every chunk read with (events audited, events to audit at most).
Progress = Callable[[int, int], None]


async def audit_log(
    store: EventStore,
    auditor: Auditor,
    *,
    to_seq: int | None = None,
    progress: Progress | None = None,
) -> None:
    """Feed the log from sequence 1 to `to_seq` (default: its end now) through `auditor`."""
    last = await store.last_seq()
    stop = last if to_seq is None else min(to_seq, last)
    if stop < 1:
        return
    apply, unreadable = auditor.apply, auditor.unreadable
    with collector_paused():
        async for chunk in store.read_messages(1, stop=stop):
            for message in chunk:
                try:
                    event = decode_event(message.data)
                except DecodeError as exc:
                    unreadable(message.seq, exc.reason, committed=message.committed)
                    continue
                committed = message.committed
                apply(message.seq, event, batch_id=message.batch_id, committed=committed)
            if progress is not None:
                progress(auditor.events, stop)


async def audit(
    store: EventStore,
    *,
    to_seq: int | None = None,
    views: Path | None = None,
    progress: Progress | None = None,
    max_per_code: int = 100,
    settle_grace: timedelta = SETTLE_GRACE,
) -> AuditReport:
    """Check every invariant over the log (up to `to_seq`), and, given the live views file,
    that it equals a replay of the log to its position."""
    started = time.perf_counter()
    auditor = Auditor(max_per_code=max_per_code, settle_grace=settle_grace)
    await audit_log(store, auditor, to_seq=to_seq, progress=progress)
    auditor.finish()
    read_s = time.perf_counter() - started
    comparison: ViewsComparison | None = None
    if views is not None:
        comparison = await compare_views(store, views, auditor.findings)
    findings = auditor.findings
    return AuditReport(
        ok=findings.total == 0,
        position=auditor.position,
        events=auditor.events,
        seconds=round(time.perf_counter() - started, 3),
        events_per_second=int(auditor.events / read_s) if read_s > 0 else 0,
        counts=dict(findings.counts),
        violations=findings.in_log_order(),
        truncated=findings.truncated,
        pending=auditor.pending,
        views=comparison,
        simulated=auditor.simulated,
    )
