"""`bench/replay.py` (the audit work's replay and audit bench), run from `python -m bench`.

It appends a legal synthetic log as the platform would (every multi-event decision one
atomic batch), then times, on that log: the raw ordered-consumer read (the baseline),
`rebuild` of every projection into a fresh file (what `dante replay` does), the same
reading as the operator does (direct gets), and the audit. This reports those rates with
their ratio to the raw read of the same log. 200,000 events by default (appending takes
most of the time, about 2 ms per atomic batch); `python -m bench.replay --events 1000000`
is the million-event run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from bench import replay
from bench.report import Report

if TYPE_CHECKING:
    from bench.options import Options


async def run(options: Options) -> Report:
    events = options.fleet or (50_000 if options.quick else 200_000)
    with tempfile.TemporaryDirectory() as tmp:
        found = await replay.main(events, Path(tmp))
    timings = found["timings"]
    report = Report("replay", params={"events": found["events"], "jobs": found["jobs"]})
    report.add("raw ordered-consumer read", timings["read"]["events_per_second"], "events/s")
    report.add(
        "replay (rebuild every projection)",
        timings["replay"]["events_per_second"],
        "events/s",
        vs="raw ordered-consumer read",
    )
    report.add(
        "audit (every invariant)",
        timings["audit"]["events_per_second"],
        "events/s",
        vs="raw ordered-consumer read",
    )
    report.add("read, direct gets", timings["read, direct gets"]["events_per_second"], "events/s")
    report.add(
        "replay, direct gets",
        timings["replay, direct gets"]["events_per_second"],
        "events/s",
        vs="read, direct gets",
    )
    report.add("appending the log", found["append_s"], "s")
    if found["audit_violations"]:
        report.notes.append(f"the audit found {found['audit_violations']} violations")
    return report
