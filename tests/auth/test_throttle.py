from __future__ import annotations

import asyncio

import pytest

from dante.services.auth.throttle import Throttle

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def fail(throttle: Throttle, user: str) -> None:
    async with throttle.attempt(user) as attempt:
        attempt.failed()


async def test_the_delay_doubles_with_each_failure_up_to_a_cap() -> None:
    throttle = Throttle(base=0.001, cap=0.004)
    delays = []
    for _ in range(5):
        delays.append(throttle.delay("mallory"))
        await fail(throttle, "mallory")
    assert delays == [0.0, 0.001, 0.002, 0.004, 0.004]
    assert throttle.delay("alice") == 0.0  # per user


async def test_a_success_resets_the_count() -> None:
    throttle = Throttle(base=0.001)
    await fail(throttle, "alice")
    await fail(throttle, "alice")
    async with throttle.attempt("alice") as attempt:
        attempt.succeeded()
    assert throttle.failures("alice") == 0


async def test_failures_are_forgotten_after_a_quiet_while() -> None:
    clock = FakeClock()
    throttle = Throttle(base=0.001, forget_after=60, clock=clock)
    await fail(throttle, "alice")
    clock.now += 61
    assert throttle.failures("alice") == 0


async def test_an_attempt_that_cannot_be_checked_in_time_is_refused_unchecked() -> None:
    clock = FakeClock()
    throttle = Throttle(base=10, cap=10, clock=clock)
    await fail(throttle, "alice")
    async with throttle.attempt("alice", deadline=clock.now + 5) as attempt:
        assert not attempt.allowed
    assert throttle.failures("alice") == 1  # not counted


async def test_an_early_attempt_waits_its_turn_or_is_refused_unchecked() -> None:
    clock = FakeClock()
    throttle = Throttle(base=0.5, max_wait=1.0, clock=clock)
    for _ in range(3):
        await fail(throttle, "alice")
    assert throttle.delay("alice") == 2.0
    async with throttle.attempt("alice") as attempt:  # 2 s early: more than max_wait
        assert not attempt.allowed
    assert throttle.failures("alice") == 3
    clock.now += 1.5  # 0.5 s early: waits for it
    async with throttle.attempt("alice") as attempt:
        assert attempt.allowed
        attempt.succeeded()
    assert throttle.failures("alice") == 0


async def test_attempts_for_one_user_take_turns() -> None:
    throttle = Throttle(base=0.05)
    await fail(throttle, "alice")
    order: list[str] = []

    async def attempt(tag: str) -> None:
        async with throttle.attempt("alice") as turn:
            order.append(f"{tag}+")
            await asyncio.sleep(0.01)
            order.append(f"{tag}-")
            turn.failed()

    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(attempt("a"), attempt("b"), attempt("c"))
    # One at a time, each after its wait: 0.05 + 0.1 + 0.2 at least.
    assert order == ["a+", "a-", "b+", "b-", "c+", "c-"]
    assert loop.time() - started >= 0.35
