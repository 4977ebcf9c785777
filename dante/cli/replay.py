"""`dante replay`: every read model rebuilt from the log into a fresh SQLite file, as it stood
at a sequence or a moment; it reads the log itself and never touches the live files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec
from cyclopts import Parameter

from dante.cli.operator_log import LogUnavailable, error, operator_log
from dante.cli.progress import ProgressBar
from dante.client.connect import EXIT_USAGE, resolve_url


def parse_time(text: str) -> datetime:
    """An ISO 8601 moment; without a zone it is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: write it as ISO 8601, like 2026-11-26T12:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _print_human(summary: dict[str, Any]) -> None:
    print(
        f"replayed {summary['events']:,} events to sequence {summary['position']:,} in "
        f"{summary['seconds']:.2f} s ({summary['events_per_second']:,} events/s)"
    )
    rows = ", ".join(f"{table} {count:,}" for table, count in summary["rows"].items())
    print(f"wrote {summary['file']}: {rows}")


async def replay(
    *,
    to_seq: Annotated[int | None, Parameter(help="Stop after this sequence.")] = None,
    until: Annotated[
        str | None,
        Parameter(help="Stop before the first event after this time (ISO 8601; UTC if no zone)."),
    ] = None,
    out: Annotated[
        Path, Parameter(help="The SQLite file to write; it must not exist (see --force).")
    ] = Path("dante-replay.sqlite3"),
    force: Annotated[bool, Parameter(help="Overwrite --out if it exists.")] = False,
    json: Annotated[bool, Parameter(help="Print the summary as one JSON document.")] = False,
) -> int:
    """Rebuild every read model from the log into a fresh SQLite file.

    The same folds as the live views, from sequence 1 to --to-seq, or to the last event that
    happened by --until, or to the end of the log. Prints events read, their rate, the last
    sequence and the time taken. Exit 0 when done, 2 for a usage error, 3 when the platform
    cannot be reached.
    """
    from dante.projections.rebuild import rebuild

    if to_seq is not None and until is not None:
        error("give --to-seq or --until, not both")
        return EXIT_USAGE
    if to_seq is not None and to_seq < 0:
        error("--to-seq must be 0 or more")
        return EXIT_USAGE
    try:
        moment = parse_time(until) if until is not None else None
    except ValueError as exc:
        error(str(exc))
        return EXIT_USAGE
    if out.exists() and not force:
        error(f"{out} exists: choose another --out, or pass --force to overwrite it")
        return EXIT_USAGE
    bar = ProgressBar("replaying")
    try:
        async with operator_log(resolve_url(None), name="dante-replay") as store:
            report = await rebuild(
                store, out, to_seq=to_seq, until=moment, progress=bar, replace=force
            )
    except LogUnavailable as exc:
        bar.close()
        error(str(exc))
        return exc.exit_code
    bar.close()
    summary = {
        "file": str(out),
        "position": report.position,
        "events": report.events,
        "seconds": report.seconds,
        "events_per_second": int(report.events / report.seconds) if report.seconds else 0,
        "rows": report.rows,
    }
    if json:
        print(msgspec.json.encode(summary).decode())
    else:
        _print_human(summary)
    return 0
