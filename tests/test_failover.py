"""A three-node cluster loses its stream leader under load, as real processes: every write
goes on once the cluster has a new leader, nothing is lost or applied twice, the audit is
clean, and the node started again rejoins (tests/failover.py runs the scenario).

The stall is the cluster's election: after a leader's node is killed (SIGKILL), nats-server's
followers wait 4 to 9 s for its heartbeats before one campaigns (hard-coded in nats-server
2.15); the platform and its clients must add at most a second to that. An orderly stop
(SIGTERM) hands the leadership over at once, and the writes hardly pause.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.failover import Outcome, kill_the_stream_leader

pytestmark = [pytest.mark.anyio, pytest.mark.cluster, pytest.mark.slow]

#: What the platform and its clients may add to the cluster's own election.
OURS_S = 1.0
#: nats-server's longest wait before a follower campaigns, and the election itself.
ELECTION_MAX_S = 9.0 + 1.0


def _held(outcome: Outcome) -> None:
    assert outcome.failed == [], outcome.failed[:5]
    assert outcome.writes > 100
    # Each renter has exactly what was acknowledged: nothing lost, nothing applied twice.
    assert outcome.balances == outcome.deposited
    assert outcome.job_state == "completed"
    audit = outcome.audit
    assert audit.get("ok") is True, audit
    counts = audit["counts"]
    assert isinstance(counts, dict) and sum(counts.values()) == 0
    assert outcome.leader_after and outcome.leader_after != outcome.killed
    assert outcome.rejoined_s < 30


async def test_the_stream_leaders_node_killed_stalls_writes_only_for_the_election(
    tmp_path: Path,
) -> None:
    outcome = await kill_the_stream_leader(tmp_path, sig=signal.SIGKILL)
    _held(outcome)
    assert outcome.elected_s is not None, outcome.platform_log[-3000:]
    assert outcome.stall_s <= outcome.elected_s + OURS_S, outcome.summary()
    assert outcome.stall_s <= ELECTION_MAX_S + OURS_S, outcome.summary()


async def test_the_stream_leaders_node_stopped_hands_over_without_a_stall(
    tmp_path: Path,
) -> None:
    outcome = await kill_the_stream_leader(tmp_path, sig=signal.SIGTERM)
    _held(outcome)
    assert outcome.stall_s <= 5.0, outcome.summary()
