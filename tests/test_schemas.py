from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from dante.events.codec import decode_event
from dante.events.upcasting import registered
from dante.schemas import events as ev
from dante.schemas.codec import DecodeError, decode_command, encode
from dante.schemas.commands import ALL_COMMANDS, SubmitJob
from dante.schemas.export import normalised, render_all
from dante.schemas.values import check_relative_path
from tests.factories import sample_events

REPO = Path(__file__).resolve().parents[1]
_DEPOSIT = (
    b'{"type": "FundsDeposited", "event_id": "x", "at": "2026-01-01T00:00:00%s", '
    b'"cause": "c", "wallet_id": "alice", "amount": %s}'
)


def test_every_event_type_has_a_sample() -> None:
    assert {type(e) for e in sample_events()} == set(ev.ALL_EVENTS)


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: type(e).__name__)
def test_every_event_round_trips(event: ev.Event) -> None:
    data = encode(event)
    assert decode_event(data) == event
    assert msgspec.json.decode(data)["type"] == type(event).__name__


def test_events_are_frozen() -> None:
    event = sample_events()[0]
    with pytest.raises(AttributeError):
        event.event_id = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not an event"),
        (b"\xff\xfe", "not an event"),
        (b'{"type": "FundsDeposited", "event_id": "x"', "not an event"),  # truncated
        (b"[1, 2]", "not an event"),
        (b'{"no": "type"}', "no 'type'"),
        (b'{"type": "Nope", "event_id": "x"}', "invalid Nope"),
        (_DEPOSIT % (b"Z", b"1.5"), "invalid FundsDeposited"),  # a float amount
        (_DEPOSIT % (b"Z", b"-1"), "invalid FundsDeposited"),  # a negative amount
        (_DEPOSIT % (b"", b"1"), "invalid FundsDeposited"),  # a time without a zone
    ],
)
def test_garbage_is_refused_with_one_typed_error(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_event(data)


def test_truncations_of_every_event_are_refused() -> None:
    for event in sample_events():
        data = encode(event)
        for cut in range(0, len(data) - 1, max(1, len(data) // 7)):
            with pytest.raises(DecodeError):
                decode_event(data[:cut])


def test_unknown_fields_from_a_newer_writer_are_ignored() -> None:
    event = sample_events()[0]
    raw = msgspec.json.decode(encode(event))
    raw["added_later"] = {"x": 1}
    assert decode_event(msgspec.json.encode(raw)) == event


def test_an_old_shape_is_upcast_before_decoding() -> None:
    # An imagined first version of FundsDeposited stored the amount in "udgpu" and its
    # reference as "memo". v0 -> v1 renames both.
    old = {
        "type": "FundsDeposited",
        "v": 0,
        "event_id": "e1",
        "at": "2026-01-01T00:00:00Z",
        "cause": "c",
        "wallet_id": "alice",
        "udgpu": 7,
        "memo": "card",
    }

    def v0_to_v1(raw: dict[str, object]) -> dict[str, object]:
        raw["amount"] = raw.pop("udgpu")
        raw["reference"] = raw.pop("memo")
        return raw

    with pytest.raises(DecodeError):
        decode_event(msgspec.json.encode(old))
    with registered("FundsDeposited", 0, v0_to_v1):
        event = decode_event(msgspec.json.encode(old))
    assert isinstance(event, ev.FundsDeposited)
    assert (event.amount, event.reference, event.v) == (7, "card", 1)


def test_commands_refuse_unknown_fields_and_bad_values() -> None:
    good = b'{"command_id": "cmd-0001", "amount": 5}'
    assert decode_command("renter", "deposit", good).command_id == "cmd-0001"
    with pytest.raises(DecodeError, match="there is no renter command"):
        decode_command("renter", "steal", good)
    with pytest.raises(DecodeError) as info:
        decode_command("renter", "deposit", b'{"command_id": "cmd-0001", "amount": 0}')
    assert info.value.field == "amount"
    with pytest.raises(DecodeError, match="unknown field"):
        decode_command("renter", "deposit", b'{"command_id": "cmd-0001", "amount": 1, "x": 1}')
    with pytest.raises(DecodeError, match="Expected `int`"):
        decode_command("renter", "deposit", b'{"command_id": "cmd-0001", "amount": 1.0}')


def test_a_job_needs_at_least_one_gpu() -> None:
    body = (
        b'{"command_id": "cmd-0001", "requirements": {"gpu_count": 0},'
        b' "payload": {"kind": "script", "script": "x"}}'
    )
    with pytest.raises(DecodeError) as info:
        decode_command("renter", "submit", body)
    assert info.value.field == "requirements.gpu_count"
    ok = body.replace(b'"gpu_count": 0', b'"gpu_count": 2')
    command = decode_command("renter", "submit", ok)
    assert isinstance(command, SubmitJob)
    assert command.requirements.gpu_count == 2


@pytest.mark.parametrize(
    "path", ["../x", "/etc/passwd", "a/../../b", "a//b", "./a", "C:/x", "a\\b"]
)
def test_paths_that_escape_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="path"):
        check_relative_path(path)


def test_plain_relative_paths_pass() -> None:
    assert check_relative_path("data/train.csv") == "data/train.csv"


def _as_an_older_msgspec_wrote_it(node: Any, doc_of: dict[str, str]) -> Any:
    """Descriptions with the docstrings' indentation kept, as msgspec before 0.23 left them."""
    if isinstance(node, dict):
        title = node.get("title")
        return {
            key: doc_of.get(str(title), value)
            if key == "description"
            else _as_an_older_msgspec_wrote_it(value, doc_of)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_as_an_older_msgspec_wrote_it(item, doc_of) for item in node]
    return node


def test_the_export_does_not_depend_on_how_msgspec_cleans_docstrings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    classes = [*ev.ALL_EVENTS, *ALL_COMMANDS]
    raw_docs = {c.__name__: c.__doc__ for c in classes if c.__doc__ and "\n    " in c.__doc__}
    assert raw_docs, "no multi-line docstring to try the older style on"
    real = msgspec.json.schema_components

    def older(types: Any, **kwargs: Any) -> Any:
        schemas, components = real(types, **kwargs)
        return schemas, _as_an_older_msgspec_wrote_it(components, raw_docs)

    today = render_all()
    monkeypatch.setattr(msgspec.json, "schema_components", older)
    # The stand-in really writes the older form: indented lines reach the export's input.
    _, sample = msgspec.json.schema_components([ev.FundsCharged])
    assert "\n    " in sample["FundsCharged"]["description"]
    assert render_all() == today


def test_descriptions_are_cleaned_wherever_they_sit() -> None:
    schema = {
        "description": "First line\n    second line\n",
        "properties": {"description": {"type": "string", "description": "\n  Indented\n"}},
        "anyOf": [{"description": "  a\n    b"}],
    }
    assert normalised(schema) == {
        "description": "First line\nsecond line",
        "properties": {"description": {"type": "string", "description": "Indented"}},
        "anyOf": [{"description": "a\nb"}],
    }


def test_committed_schemas_match_the_code() -> None:
    expected = render_all()
    committed = {
        str(p.relative_to(REPO / "schemas")): p.read_text()
        for p in (REPO / "schemas").rglob("*.json")
    }
    stale = sorted(set(committed) - set(expected))
    missing = sorted(set(expected) - set(committed))
    changed = sorted(k for k in expected if k in committed and committed[k] != expected[k])
    assert not (stale or missing or changed), (
        "schemas/ drifted from the code; run `dante schemas export --out schemas`: "
        f"stale={stale} missing={missing} changed={changed}"
    )
    assert len(expected) == len(ev.ALL_EVENTS) + len(ALL_COMMANDS)
