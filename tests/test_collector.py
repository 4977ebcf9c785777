"""The collector settings: folded data is never tracked, and pausing the collector is undone."""

from __future__ import annotations

import gc
import inspect

import msgspec
import pytest

from dante.collector import collector_paused
from dante.domain.model import job, provider, wallet
from dante.events import codec as event_codec
from dante.schemas import accounts, commands, dispatch, events, output, results, values
from tests.factories import deposit

DATA_MODULES = (
    accounts, commands, dispatch, events, output, results, values, job, provider, wallet,
    event_codec,
)  # fmt: skip


def structs() -> list[type[msgspec.Struct]]:
    found = {
        cls
        for module in DATA_MODULES
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, msgspec.Struct) and cls.__module__ == module.__name__
    }
    return sorted(found, key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


@pytest.mark.parametrize("cls", structs(), ids=lambda cls: cls.__qualname__)
def test_data_types_are_not_tracked_by_the_cyclic_collector(cls: type[msgspec.Struct]) -> None:
    # Frozen data trees cannot form cycles; tracking them made the collector rescan the
    # whole world over and over (a third of the platform's CPU at fleet scale).
    assert cls.__struct_config__.frozen
    assert not cls.__struct_config__.gc


def test_a_decoded_event_is_untracked() -> None:
    event = event_codec.decode_event(msgspec.json.encode(deposit("alice", 5)))

    assert not gc.is_tracked(event)


def test_pausing_the_collector_is_undone_and_nests() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()

    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError
    assert gc.isenabled()
