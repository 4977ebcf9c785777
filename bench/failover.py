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

import signal
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from bench.report import Report
from tests.failover import kill_the_stream_leader

if TYPE_CHECKING:
    from bench.options import Options


async def run(options: Options) -> Report:
    kills = 1 if options.quick else 3
    runs = [signal.SIGKILL] * kills + [signal.SIGTERM]
    report = Report("failover", params={"runs": len(runs), "nodes": 3, "renters": 4})
    for n, sig in enumerate(runs, start=1):
        with tempfile.TemporaryDirectory() as tmp:
            outcome = await kill_the_stream_leader(Path(tmp), sig=sig)
        report.notes.append(f"run {n}: {outcome.summary()}")
        name = f"run {n} ({sig.name})"
        if outcome.elected_s is not None:
            report.add(f"{name}: new stream leader after", outcome.elected_s, "s")
        report.add(f"{name}: longest gap between writes", outcome.stall_s, "s")
        report.add(f"{name}: slowest single write", outcome.slowest_s, "s")
        report.add(f"{name}: writes acknowledged", outcome.writes, "")
        report.add(f"{name}: writes lost", len(outcome.failed), "")
        report.add(f"{name}: restarted node current again after", outcome.rejoined_s, "s")
    return report
