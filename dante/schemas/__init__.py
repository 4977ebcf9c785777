"""Wire contracts: every event, command and reply, and the value types they carry."""

from dante.schemas.codec import DecodeError, decode_as, decode_command, encode
from dante.schemas.commands import ALL_COMMANDS, Command, ErrorInfo, Reply
from dante.schemas.events import ALL_EVENTS, EVENT_TYPES, AnyEvent, Event
from dante.schemas.money import Money, MoneyError, format_dgpu, parse_dgpu

__all__ = [
    "ALL_COMMANDS",
    "ALL_EVENTS",
    "EVENT_TYPES",
    "AnyEvent",
    "Command",
    "DecodeError",
    "ErrorInfo",
    "Event",
    "Money",
    "MoneyError",
    "Reply",
    "decode_as",
    "decode_command",
    "encode",
    "format_dgpu",
    "parse_dgpu",
]
