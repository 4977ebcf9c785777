"""Recording the platform's settings in the log: once per change, whoever records them, and
read back as the settings in force; checked on a real log."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from dante.domain.settings import BOUNDS, Settings, SettingsError
from dante.events.store import EventStore
from dante.schemas import events as ev
from dante.services.settings import record_settings, settings_in_force

pytestmark = pytest.mark.anyio


async def recorded(store: EventStore) -> list[ev.SettingsChanged]:
    found = await store.load("platform", "settings")
    return [r.event for r in found if isinstance(r.event, ev.SettingsChanged)]


async def test_nothing_is_recorded_for_the_defaults_on_a_new_log(store: EventStore) -> None:
    assert await record_settings(store, Settings(), "dante up") is None
    assert await settings_in_force(store) == (Settings(), 0)
    assert await store.last_seq() == 0


async def test_a_change_is_recorded_once_and_read_back(store: EventStore) -> None:
    tuned = dataclasses.replace(Settings(), grace_s=60, min_withdrawal=1)
    seq = await record_settings(store, tuned, "dante up --config x.toml")
    assert seq is not None
    assert await settings_in_force(store) == (tuned, seq)
    assert await record_settings(store, tuned, "dante up --config x.toml") is None
    (event,) = await recorded(store)
    assert event.changed == ["grace_s", "min_withdrawal"]
    assert (event.grace_s, event.min_withdrawal, event.fee_bps) == (60, 1, 500)


async def test_processes_recording_at_once_append_the_same_settings_once(
    store: EventStore,
) -> None:
    tuned = dataclasses.replace(Settings(), offline_after_s=10)
    await asyncio.gather(*(record_settings(store, tuned, f"process {n}") for n in range(4)))
    assert len(await recorded(store)) == 1
    assert (await settings_in_force(store))[0] == tuned


async def test_different_settings_at_once_are_each_recorded_in_turn(store: EventStore) -> None:
    one = dataclasses.replace(Settings(), fee_bps=100)
    two = dataclasses.replace(Settings(), fee_bps=200)
    await asyncio.gather(record_settings(store, one, "a"), record_settings(store, two, "b"))
    events = await recorded(store)
    assert sorted(e.fee_bps for e in events) == [100, 200]
    in_force, _ = await settings_in_force(store)
    assert in_force.fee_bps == events[-1].fee_bps


def test_every_setting_has_bounds_and_the_defaults_are_within_them() -> None:
    defaults = Settings()
    assert set(BOUNDS) == set(Settings.names())
    for name, (low, high, _) in BOUNDS.items():
        assert low <= getattr(defaults, name) <= high, name
        assert defaults.tuned({name: low}, "t") == dataclasses.replace(defaults, **{name: low})
        with pytest.raises(SettingsError, match=f"t: {name} is from"):
            defaults.tuned({name: high + 1}, "t")
    with pytest.raises(SettingsError, match="whole number"):
        defaults.tuned({"grace_s": True}, "t")
