"""A failing part of the platform restarts with backoff, and a part that had been working
long restarts at once again (its earlier failures are long past)."""

from __future__ import annotations

import pytest

from dante.platform import HEALTHY_S, supervise

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_restarts_double_until_a_run_was_healthy_then_start_over() -> None:
    clock = Clock()
    runs: list[float] = [0, 0, 0, 0, HEALTHY_S + 1, 0, 0]

    async def part() -> None:
        if not runs:
            return  # done: supervise returns
        clock.now += runs.pop(0)
        raise RuntimeError("lost its connection")

    await supervise("part", part, sleep=clock.sleep, clock=clock)
    assert clock.slept == [1.0, 2.0, 4.0, 8.0, 1.0, 2.0, 4.0]


async def test_restart_delays_stop_growing_at_thirty_seconds() -> None:
    clock = Clock()
    failures = 8

    async def part() -> None:
        nonlocal failures
        if failures == 0:
            return
        failures -= 1
        raise RuntimeError("bug")

    await supervise("part", part, sleep=clock.sleep, clock=clock)
    assert clock.slept == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
