"""Encoding and decoding of everything on the wire, with one typed error for bad input."""

from __future__ import annotations

from typing import Any, Final, TypeVar

import msgspec

from dante.schemas.commands import ALL_COMMANDS, Command, ErrorInfo, Reply

T = TypeVar("T")

_encoder: Final = msgspec.json.Encoder()


class DecodeError(ValueError):
    """Bytes that are not a valid message of the expected kind; `reason` says why, readably."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def _field_of(error: msgspec.ValidationError) -> str | None:
    # msgspec ends its messages with "- at `$.requirements.gpu_count`"
    text = str(error)
    marker = "- at `$."
    if marker in text:
        return text.rsplit(marker, 1)[1].rstrip("`")
    return None


def decode_as(data: bytes | str, type_: type[T], *, what: str = "message") -> T:
    """Decode JSON into `type_`, turning every failure into a `DecodeError`."""
    try:
        return msgspec.json.decode(data, type=type_, strict=True)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"invalid {what}: {exc}", field=_field_of(exc)) from None
    except msgspec.DecodeError as exc:
        raise DecodeError(f"{what} is not valid JSON: {exc}") from None


_COMMAND_DECODERS: Final[dict[tuple[str, str], msgspec.json.Decoder[Any]]] = {
    (cls.ROLE, cls.VERB): msgspec.json.Decoder(cls) for cls in ALL_COMMANDS
}
COMMAND_TYPES: Final[dict[tuple[str, str], type[Command[Any]]]] = {
    (cls.ROLE, cls.VERB): cls for cls in ALL_COMMANDS
}


def decode_command(role: str, verb: str, data: bytes) -> Command[Any]:
    """Decode the body of a command sent to `dante.cmd.<role>.<identity>.<verb>`."""
    decoder = _COMMAND_DECODERS.get((role, verb))
    if decoder is None:
        raise DecodeError(f"there is no {role} command {verb!r}", field="verb")
    try:
        command: Command[Any] = decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"invalid {verb} command: {exc}", field=_field_of(exc)) from None
    except msgspec.DecodeError as exc:
        raise DecodeError(f"{verb} command is not valid JSON: {exc}") from None
    return command


_reply_decoder: Final = msgspec.json.Decoder(Reply)


def decode_reply(data: bytes) -> Reply:
    try:
        return _reply_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError(f"invalid reply: {exc}") from None


def ok_reply(result: Any = None, appended: list[int] | None = None) -> bytes:
    return encode(Reply(ok=True, result=msgspec.Raw(encode(result)), appended=appended or []))


def error_reply(error: ErrorInfo) -> bytes:
    return encode(Reply(ok=False, error=error))
