"""Garbage-collector settings for Dante's long folds and its long-running platform.

Everything Dante folds is data that cannot form reference cycles (its msgspec structs are
declared `gc=False`), yet CPython's cyclic collector still rescans every container that
holds them, over and over as the heap grows. Measured on the 10,000-agent fleet bench, that
was a third of the platform's CPU; during a replay it grows with the log.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

#: Young objects allocated between collections in a long-running platform (CPython's default
#: is 700): each pass costs about the same however much it finds.
PLATFORM_THRESHOLDS: Final = (50_000, 50, 100)


def settle_heap() -> None:
    """Once the platform has read its state: collect, then exempt everything alive now (most
    of it the world, kept for the life of the process) from later collections, and collect
    young objects less often. The price: what is alive now and later becomes part of a
    garbage cycle is never reclaimed; at start that is the world's data (no cycles) and the
    platform's long-lived tasks."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*PLATFORM_THRESHOLDS)


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection for a bounded fold (a replay, an audit); memory is still freed by
    reference counting, and whatever cycles formed meanwhile wait for the next collection
    after it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
