"""The command service's admission: token buckets per account, queues served in turn."""

from __future__ import annotations

import asyncio

import pytest

from dante.domain.settings import Settings
from dante.services.admission import Admission, FairQueue

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_account_gets_its_burst_then_its_rate_and_is_told_when_to_come_back() -> None:
    clock = Clock()
    admission = Admission(Settings(request_rate=10, request_burst=3), clock=clock)
    assert [admission.admit("mallory", writes=False) for _ in range(3)] == [None] * 3
    wait = admission.admit("mallory", writes=False)
    assert wait == pytest.approx(0.1)
    # Another account is untouched by mallory's spending.
    assert admission.admit("alice", writes=False) is None
    clock.now += 0.101
    assert admission.admit("mallory", writes=False) is None
    assert admission.admit("mallory", writes=False) is not None


def test_writes_take_from_a_stricter_bucket_too_and_a_refusal_takes_nothing() -> None:
    clock = Clock()
    settings = Settings(request_rate=100, request_burst=10, write_rate=1, write_burst=2)
    admission = Admission(settings, clock=clock)
    assert admission.admit("mallory", writes=True) is None
    assert admission.admit("mallory", writes=True) is None
    assert admission.admit("mallory", writes=True) == pytest.approx(1.0)
    # Reads still pass: the refused write took no request token either.
    assert [admission.admit("mallory", writes=False) for _ in range(8)] == [None] * 8
    assert admission.admit("mallory", writes=False) is not None


def test_the_operator_is_not_limited() -> None:
    admission = Admission(Settings(request_rate=1, request_burst=1))
    assert all(admission.admit("operator", writes=True) is None for _ in range(100))


async def test_queued_requests_are_served_round_robin_across_accounts() -> None:
    served: list[str] = []
    gate = asyncio.Event()

    async def run(item: str) -> None:
        await gate.wait()
        served.append(item)

    queue: FairQueue[str] = FairQueue(run, concurrency=1, queue_per_account=100)
    for n in range(50):
        assert queue.offer("mallory", f"m{n}")
    assert queue.offer("alice", "a0")
    assert queue.offer("alice", "a1")
    gate.set()
    await queue.drain(5)
    # mallory was in line first; then the two take turns: alice's wait behind one of
    # mallory's each, not behind her 49.
    assert served[:6] == ["m0", "m1", "a0", "m2", "a1", "m3"]
    assert len(served) == 52


async def test_a_full_account_queue_refuses_and_others_still_queue() -> None:
    gate = asyncio.Event()

    async def run(_: int) -> None:
        await gate.wait()

    queue: FairQueue[int] = FairQueue(
        run, concurrency=4, queue_per_account=3, running_per_account=2
    )
    offered = [queue.offer("mallory", n) for n in range(10)]
    # Two running, three waiting: the rest refused.
    assert offered == [True] * 5 + [False] * 5
    assert queue.offer("alice", 0)
    assert queue.waiting == 3  # alice's runs at once: a slot was free
    gate.set()
    await queue.drain(5)
    assert queue.waiting == 0


def test_refusals_are_reported_at_most_every_ten_seconds_with_their_count() -> None:
    clock = Clock()
    admission = Admission(Settings(), clock=clock)
    assert admission.refusal("mallory") == 1  # the first at once
    assert [admission.refusal("mallory") for _ in range(99)] == [None] * 99
    assert admission.refusal("alice") == 1
    clock.now += 10
    assert admission.refusal("mallory") == 100
