"""Upcasters: turn an event stored in an older shape into the current one before decoding.

Events in the log are never rewritten. When a change to an event is more than adding a field
with a default, its class's `v` default goes up by one and a function registered here maps
the raw form of the previous version onto the new one. Chains apply in order: v1 -> v2 -> v3.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import msgspec

from dante.schemas.events import ALL_EVENTS

Raw = dict[str, Any]
Upcaster = Callable[[Raw], Raw]

#: The version each event type is written at today.
CURRENT_VERSION: Final[dict[str, int]] = {
    cls.__name__: next(f.default for f in msgspec.structs.fields(cls) if f.name == "v")
    for cls in ALL_EVENTS
}

_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register `fn` as turning `event_type` at `from_version` into `from_version + 1`."""

    def register(fn: Upcaster) -> Upcaster:
        key = (event_type, from_version)
        if key in _UPCASTERS:
            raise ValueError(f"an upcaster for {event_type} v{from_version} is already registered")
        _UPCASTERS[key] = fn
        return fn

    return register


@contextmanager
def registered(event_type: str, from_version: int, fn: Upcaster) -> Iterator[None]:
    """Register an upcaster for the duration of a block (tests of old shapes use this)."""
    upcaster(event_type, from_version)(fn)
    try:
        yield
    finally:
        del _UPCASTERS[(event_type, from_version)]


def needs_upcast(event_type: str, version: int) -> bool:
    return version != CURRENT_VERSION.get(event_type, version)


def upcast(raw: Raw) -> Raw:
    """Apply the chain of upcasters to a raw event until it is at the current version."""
    event_type = raw.get("type")
    version = raw.get("v", 1)
    if not isinstance(event_type, str) or not isinstance(version, int):
        return raw
    target = CURRENT_VERSION.get(event_type)
    while target is not None and version < target:
        fn = _UPCASTERS.get((event_type, version))
        if fn is None:
            raise LookupError(f"no upcaster from {event_type} v{version} to v{version + 1}")
        raw = fn(dict(raw))
        version += 1
        raw["v"] = version
    return raw
