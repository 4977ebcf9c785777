"""`dante audit`: replay the log and prove every invariant, or name each violation with the
sequences involved. Exit 0 when all hold, 1 otherwise."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import msgspec
from cyclopts import Parameter

from dante.cli.operator_log import LogUnavailable, error, operator_log
from dante.cli.progress import ProgressBar
from dante.client.connect import EXIT_REJECTED, EXIT_USAGE, resolve_url

if TYPE_CHECKING:
    from dante.events.store import EventStore
    from dante.projections.audit import AuditReport
    from dante.projections.audit.report import Violation

VIEWS_FILE = "views.sqlite3"


def _seqs(seqs: list[int]) -> str:
    return ",".join(str(s) for s in seqs)


def _print_human(report: AuditReport) -> None:
    from dante.projections.audit import CHECKS

    print(
        f"audited {report.events:,} events to sequence {report.position:,} in "
        f"{report.seconds:.2f} s ({report.events_per_second:,} events/s)"
    )
    views = report.views
    if views is not None:
        if views.compared:
            verdict = "differ from" if views.differing_rows else "equal"
            print(f"live views {views.file} at sequence {views.position:,}: {verdict} the replay")
        else:
            print(f"live views {views.file} not compared: {views.note or 'see below'}")
    if report.violations:
        width = max(len(v.code) for v in report.violations)
        print("violations (code, sequences, what):")
        for violation in report.violations:
            print(f"  {violation.code:<{width}}  {_seqs(violation.seqs):<12}  {violation.message}")
    for pending in report.pending:
        print(
            f"pending settlement: {pending.hold_udgpu} µdGPU still held for attempt "
            f"{pending.attempt} of {pending.job_id}, which ended at seq {pending.ended_seq}"
        )
    simulated = report.simulated
    if simulated.ticks:
        print(
            f"simulated GPUs: {simulated.ticks:,} usage tick(s) of {simulated.jobs:,} job(s), "
            f"{simulated.gpu_ms / 1000:,.1f} GPU-s, carry telemetry made up by the agent, not "
            "measured"
        )
    total = sum(report.counts.values())
    if total == 0:
        print(f"every invariant holds ({len(CHECKS)} checks)")
        return
    by_code = Counter({code: n for code, n in report.counts.items() if n})
    counts = ", ".join(f"{code} {n}" for code, n in sorted(by_code.items()))
    shown = " (the first of each are listed)" if report.truncated else ""
    print(f"{total} violation(s): {counts}{shown}")


async def _with_chain(store: EventStore, report: AuditReport, max_listed: int) -> AuditReport:
    """The report with the chain's checks added (`AuditChain`, asked as the operator)."""
    from dante.client.commands import Client
    from dante.projections.audit.chain import CHAIN_CHECKS, check, gather
    from dante.schemas.commands import AuditChain
    from dante.schemas.identity import OPERATOR

    events = [(r.seq, r.event) async for r in store.read(stop=report.position)]
    facts = gather(events)
    signatures = facts.signatures()
    client = Client(store.nc, "operator", OPERATOR, timeout=30)
    answer = await client.ask(AuditChain())
    transfers = []
    for start in range(0, len(signatures), 500):
        part = await client.ask(AuditChain(signatures=signatures[start : start + 500]))
        transfers.extend(part.transfers)
    answer = msgspec.structs.replace(answer, transfers=transfers)
    found = check(facts, answer)
    counts = {**report.counts, **dict.fromkeys(CHAIN_CHECKS, 0)}
    listed: list[Violation] = []
    for violation in found:
        counts[violation.code] += 1
        if counts[violation.code] <= max_listed:
            listed.append(violation)
    return msgspec.structs.replace(
        report,
        ok=report.ok and not found,
        counts=counts,
        violations=[*report.violations, *listed],
        truncated=report.truncated or any(n > max_listed for n in counts.values()),
    )


async def audit(
    *,
    to_seq: Annotated[int | None, Parameter(help="Audit up to this sequence.")] = None,
    views: Annotated[
        Path | None,
        Parameter(help="The live views file to compare (default: the data dir's, if any)."),
    ] = None,
    data_dir: Annotated[
        Path | None, Parameter(help="The `dante up` data folder whose views to compare.")
    ] = None,
    skip_views: Annotated[bool, Parameter(help="Do not compare any live views.")] = False,
    json: Annotated[bool, Parameter(help="Print the report as one JSON document.")] = False,
    max_listed: Annotated[int, Parameter(help="List at most this many of each violation.")] = 100,
    chain: Annotated[
        bool,
        Parameter(
            help="Also check the log against the chain: the treasury's balance, and every "
            "deposit and payout as a transfer on chain."
        ),
    ] = False,
) -> int:
    """Replay the log and check every invariant, naming each violation with its sequences.

    Money is conserved at every committed position, no balance or hold goes negative, every
    charge is its recorded GPU time at its attempt's price with the fee split exact and
    comes while the attempt runs, every ended attempt's hold is consumed or released, no GPU
    serves two placed attempts, every job transition is legal, and the live views equal a
    replay to their position. Exit 0 when all hold, 1 otherwise, 2 for a usage error, 3
    when the platform cannot be reached.
    """
    from dante.cli.lifecycle import default_data_dir
    from dante.projections.audit import audit as run_audit

    if max_listed < 1:
        error("--max-listed must be 1 or more")
        return EXIT_USAGE
    live = views
    if live is None and not skip_views:
        candidate = (data_dir or default_data_dir()) / VIEWS_FILE
        live = candidate if candidate.exists() else None
    elif skip_views:
        live = None
    if live is not None and not live.exists():
        error(f"there is no views file {live}")
        return EXIT_USAGE
    bar = ProgressBar("auditing")
    try:
        async with operator_log(resolve_url(None), name="dante-audit") as store:
            report = await run_audit(
                store, to_seq=to_seq, views=live, progress=bar, max_per_code=max_listed
            )
            if chain:
                report = await _with_chain(store, report, max_listed)
    except LogUnavailable as exc:
        bar.close()
        error(str(exc))
        return exc.exit_code
    bar.close()
    if json:
        print(msgspec.json.encode(report).decode())
    else:
        _print_human(report)
    return 0 if report.ok else EXIT_REJECTED
