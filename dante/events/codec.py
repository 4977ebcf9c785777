"""Decoding stored events: the fast typed path, and upcasting for older shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import msgspec

from dante.events.upcasting import needs_upcast, upcast
from dante.schemas.codec import DecodeError
from dante.schemas.events import AnyEvent, Event

_decoder: Final = msgspec.json.Decoder(AnyEvent)
_raw_decoder: Final = msgspec.json.Decoder(dict[str, Any])


def decode_event(data: bytes) -> Event:
    """Decode one stored event, upcasting it first if it was written in an older shape.

    Raises `DecodeError` with a readable reason for anything that is not a valid event.
    """
    try:
        event: Event = _decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return _decode_slow(data, exc)
    if needs_upcast(type(event).__name__, event.v):
        return _decode_slow(data, None)
    return event


def _decode_slow(data: bytes, first_error: Exception | None) -> Event:
    try:
        raw = _raw_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError(f"not an event: {exc}") from None
    event_type = raw.get("type")
    if not isinstance(event_type, str):
        raise DecodeError("not an event: it has no 'type'", field="type")
    try:
        raw = upcast(raw)
    except LookupError as exc:
        raise DecodeError(f"cannot read {event_type}: {exc}") from None
    try:
        event: Event = msgspec.json.decode(msgspec.json.encode(raw), type=AnyEvent)
    except msgspec.ValidationError as exc:
        reason = first_error or exc
        raise DecodeError(f"invalid {event_type} event: {reason}") from None
    return event


class Recorded(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """An event as it sits in the log: its stream sequence, subject and store time."""

    seq: int
    subject: str
    stored_at: datetime | None
    event: Event
