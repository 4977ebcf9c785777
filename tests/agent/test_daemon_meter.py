"""The usage meter: numbered ticks whose GPU time never exceeds the wall time metered."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from dante.agent.gpus import SimulatedTelemetry, parse_simulate
from dante.agent.gpus.telemetry import Reading
from dante.agent.meter import MAX_TICK_MS, UsageMeter
from dante.agent.setup import NoTelemetry
from dante.schemas.values import UsageTick
from tests.factories import NOW


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def meter(clock: Clock, indices: Sequence[int] = (0,), **kw: object) -> UsageMeter:
    return UsageMeter(indices, NoTelemetry(), clock=clock, wall=lambda: NOW, **kw)  # type: ignore[arg-type]


def take(m: UsageMeter) -> UsageTick | None:
    tick = m.prepare()
    if tick is not None:
        m.commit(tick)
    return tick


def test_nothing_is_metered_before_it_begins() -> None:
    clock = Clock()
    m = meter(clock)
    clock.now += 30
    assert take(m) is None
    m.begin()
    assert take(m) is None  # no time has passed since
    clock.now += 10
    first = take(m)
    assert first is not None
    assert (first.seq, first.gpu_ms) == (1, 10_000)


def test_ticks_are_numbered_from_one_with_a_final_partial_tick() -> None:
    clock = Clock()
    m = meter(clock, (0, 3))
    m.begin()
    ticks = []
    for _ in range(3):
        clock.now += 10
        ticks.append(take(m))
    clock.now += 2.5  # the job ends 2.5 s into the fourth interval
    m.end()
    clock.now += 7  # metering it later does not count the time after the end
    ticks.append(take(m))
    assert take(m) is None
    assert [t.seq for t in ticks if t] == [1, 2, 3, 4]
    assert [t.gpu_ms for t in ticks if t] == [20_000, 20_000, 20_000, 5_000]
    assert [[s.index for s in t.samples] for t in ticks if t] == [[0, 3]] * 4
    assert m.metered_ms == 32_500


def test_numbering_continues_from_the_journal() -> None:
    clock = Clock()
    m = meter(clock, next_seq=8)
    m.begin()
    clock.now += 1
    tick = take(m)
    assert tick is not None and tick.seq == 8


def test_a_tick_not_committed_is_proposed_again_larger() -> None:
    clock = Clock()
    m = meter(clock)
    m.begin()
    clock.now += 1
    lost = m.prepare()  # e.g. the journal write failed
    clock.now += 1
    again = m.prepare()
    assert lost is not None and again is not None
    assert (lost.seq, again.seq, again.gpu_ms) == (1, 1, 2000)


def test_a_gap_longer_than_a_day_is_spread_over_ticks() -> None:
    clock = Clock()
    m = meter(clock)
    m.begin()
    clock.now += 86_400 * 1.5
    first, second = take(m), take(m)
    assert first is not None and second is not None
    assert (first.gpu_ms, second.gpu_ms) == (MAX_TICK_MS, MAX_TICK_MS // 2)


@given(
    st.floats(min_value=0, max_value=100),
    st.lists(st.floats(min_value=0, max_value=50, allow_nan=False), max_size=40),
)
def test_gpu_time_never_exceeds_the_wall_time_and_loses_none(
    late: float, steps: list[float]
) -> None:
    clock = Clock()
    m = meter(clock, (0, 1))
    clock.now += late
    began = clock.now
    m.begin()
    per_gpu = 0
    for step in steps:
        clock.now += step
        tick = take(m)
        if tick is not None:
            assert {s.gpu_ms for s in tick.samples} == {tick.samples[0].gpu_ms}
            per_gpu += tick.samples[0].gpu_ms
        assert per_gpu <= (clock.now - began) * 1000
    m.end()
    take(m)
    assert m.metered_ms == int((clock.now - began) * 1000)


def test_samples_carry_telemetry_and_drop_nonsense() -> None:
    clock = Clock()
    gpus = parse_simulate("2xRTX 4090:24")
    telemetry = SimulatedTelemetry(gpus)
    telemetry.set_busy([1], busy=True)
    m = UsageMeter([1], telemetry, clock=clock)
    m.begin()
    clock.now += 1
    tick = take(m)
    assert tick is not None
    (sample,) = tick.samples
    assert sample.index == 1 and sample.utilization_pct is not None
    assert sample.utilization_pct >= 90

    class Broken:
        def sample(self, indices: Sequence[int]) -> dict[int, Reading]:
            return {
                i: Reading(utilization_pct=250, temperature_c=-300, power_w=90) for i in indices
            }

        def close(self) -> None:
            pass

    m = UsageMeter([0], Broken(), clock=clock)
    m.begin()
    clock.now += 1
    tick = take(m)
    assert tick is not None
    (sample,) = tick.samples
    assert (sample.utilization_pct, sample.temperature_c, sample.power_w) == (None, None, 90)


def test_failing_telemetry_never_costs_a_tick() -> None:
    class Failing:
        def sample(self, indices: Sequence[int]) -> dict[int, Reading]:
            raise RuntimeError("driver gone")

        def close(self) -> None:
            pass

    clock = Clock()
    m = UsageMeter([0], Failing(), clock=clock)
    m.begin()
    clock.now += 3
    tick = take(m)
    assert tick is not None and tick.gpu_ms == 3000
    assert tick.samples[0].utilization_pct is None
