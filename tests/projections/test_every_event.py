"""Every projection decides about every event type, and refuses one it does not know."""

from __future__ import annotations

from typing import Any

import pytest

from dante.projections.catalog import PROJECTIONS
from dante.projections.errors import UnknownEvent
from dante.projections.tables import Projection
from dante.schemas import events as ev
from tests.factories import make, sample_events


class SomethingNew(ev.JobEvent, frozen=True, kw_only=True):
    """An event type added to the schemas without telling the projections."""


def test_the_samples_cover_every_event_type() -> None:
    assert {type(event) for event in sample_events()} == set(ev.ALL_EVENTS)


@pytest.mark.parametrize("projection", PROJECTIONS, ids=lambda p: p.name)
def test_every_event_type_is_handled(projection: Projection[Any]) -> None:
    view = projection.empty()
    for seq, event in enumerate(sample_events(), start=1):
        changes = projection.evolve(view, seq, event)
        assert isinstance(changes, list | tuple), type(event).__name__


@pytest.mark.parametrize("projection", PROJECTIONS, ids=lambda p: p.name)
def test_an_unknown_event_type_raises(projection: Projection[Any]) -> None:
    with pytest.raises(UnknownEvent) as info:
        projection.evolve(projection.empty(), 1, make(SomethingNew, job_id="job-1"))
    assert info.value.event_type == "SomethingNew"
