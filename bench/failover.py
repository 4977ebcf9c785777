"""Failover: the stream leader of a three-node cluster killed (SIGKILL) under load.

The platform runs as README.md's "Run on a cluster" says, on nodes from `dante cluster
init`; renters deposit without pause while the demo provider runs a job; the nats-server
holding the log's stream leader is killed, started again after a while, and rejoins. The
scenario is tests/failover.py's, which tests/test_failover.py asserts on. Reported: the
longest time with no write acknowledged (the stall), the writes, those lost (must be 0),
whether every balance is exactly what was acknowledged, when the node was a current replica
again, and the audit's verdict. Several runs, since where the leader and the clients sit
changes from one to the next.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from bench.report import Report
from tests.failover import kill_the_stream_leader

if TYPE_CHECKING:
    from bench.options import Options


async def run(options: Options) -> Report:
    runs = 1 if options.quick else 3
    report = Report("failover", params={"runs": runs, "nodes": 3, "renters": 4})
    stalls = []
    for n in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            outcome = await kill_the_stream_leader(Path(tmp))
        summary = outcome.summary()
        report.notes.append(f"run {n + 1}: {summary}")
        stalls.append(outcome.stall_s)
        report.add(f"run {n + 1}: longest gap between writes", outcome.stall_s, "s")
        report.add(f"run {n + 1}: writes lost", len(outcome.failed), "")
        report.add(f"run {n + 1}: killed node a current replica again", outcome.rejoined_s, "s")
    report.add("worst stall", max(stalls), "s")
    return report
