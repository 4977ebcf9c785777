from __future__ import annotations

import asyncio

import pytest

from dante.services.auth.gate import AddressGate, FairSlots, client_key
from dante.services.auth.limits import ClientLimits, LimitError, LoginLimits

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_addresses_count_by_ipv4_and_ipv6_slash_64() -> None:
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_key("") == "unknown"


async def test_a_free_slot_goes_to_the_address_holding_fewest() -> None:
    slots = FairSlots(2)
    order: list[str] = []

    async def use(key: str) -> None:
        async with slots.take(key) as got:
            assert got
            order.append(key)
            await asyncio.sleep(0.01)

    # The flooder holds both slots and queues six more before the other address asks once.
    tasks = [asyncio.create_task(use("flood")) for _ in range(8)]
    await asyncio.sleep(0)
    assert slots.held("flood") == 2 and slots.waiting == 6
    tasks.append(asyncio.create_task(use("other")))
    await asyncio.gather(*tasks)
    assert order.index("other") == 2  # the first slot freed is its
    assert sorted(order) == ["flood"] * 8 + ["other"]
    assert slots.held("flood") == 0 and slots.waiting == 0


async def test_waiting_addresses_take_turns() -> None:
    slots = FairSlots(1)
    order: list[str] = []

    async def use(key: str) -> None:
        async with slots.take(key):
            order.append(key)
            await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(use(key)) for key in ("a", "a", "a", "b", "b", "c")]
    await asyncio.gather(*tasks)
    assert order == ["a", "a", "b", "c", "a", "b"]


async def test_a_slot_not_given_in_time_is_refused_and_not_leaked() -> None:
    slots = FairSlots(1)
    async with slots.take("a") as first:
        assert first
        async with slots.take("b", within=0.01) as second:
            assert not second
    async with slots.take("c", within=0.01) as third:
        assert third


def test_the_failure_budget_runs_out_and_refills() -> None:
    clock = FakeClock()
    gate = AddressGate(LoginLimits(failures_per_address=3, failures_per_minute=60), clock=clock)
    assert [gate.reserve("a") for _ in range(4)] == [True, True, True, False]
    assert gate.reserve("b")  # per address
    gate.refund("a")  # a right password gives its reservation back
    assert gate.reserve("a") and not gate.reserve("a")
    clock.now += 2.0  # one a second
    assert gate.budget("a") == pytest.approx(2.0)


def test_logins_under_way_are_bounded_per_address() -> None:
    gate = AddressGate(LoginLimits(pending_per_address=2))
    with gate.admit("a") as one, gate.admit("a") as two, gate.admit("a") as three:
        assert (one, two, three) == (True, True, False)
        with gate.admit("b") as other:
            assert other
        assert gate.pending("a") == 2
    assert gate.pending("a") == 0


def test_settings_come_from_the_environment_and_bad_ones_are_named() -> None:
    env = {"DANTE_LOGIN_PENDING_PER_ADDRESS": "4", "DANTE_CLIENT_MAX_SUBSCRIPTIONS": "50"}
    assert LoginLimits.from_env(env).pending_per_address == 4
    assert ClientLimits.from_env(env).subscriptions == 50
    assert LoginLimits.from_env({}) == LoginLimits()
    with pytest.raises(LimitError, match="DANTE_CLIENT_MAX_PAYLOAD"):
        ClientLimits.from_env({"DANTE_CLIENT_MAX_PAYLOAD": "lots"})
    with pytest.raises(LimitError, match="DANTE_LOGIN_FAILURES_PER_MINUTE"):
        LoginLimits.from_env({"DANTE_LOGIN_FAILURES_PER_MINUTE": "0"})


def test_the_sign_up_budget_runs_out_and_refills_per_address() -> None:
    clock = FakeClock()
    gate = AddressGate(LoginLimits(signups_per_address=2, signups_per_hour=3600), clock=clock)
    assert [gate.admit_signup("a") for _ in range(3)] == [True, True, False]
    assert gate.admit_signup("b")
    clock.now += 1.0  # one a second, at 3,600 an hour
    assert gate.admit_signup("a") and not gate.admit_signup("a")
    env = {"DANTE_SIGNUPS_PER_ADDRESS": "5", "DANTE_SIGNUPS_PER_HOUR": "2"}
    limits = LoginLimits.from_env(env)
    assert (limits.signups_per_address, limits.signups_per_hour) == (5, 2)
    with pytest.raises(LimitError, match="DANTE_SIGNUPS_PER_HOUR"):
        LoginLimits.from_env({"DANTE_SIGNUPS_PER_HOUR": "0"})
