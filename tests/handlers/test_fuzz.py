"""Random bytes and random valid-shaped commands: every one gets a reply, the log stays valid.

Hypothesis drives synchronous examples, so the service and its client run on an event loop
in a background thread (an anyio blocking portal) for the whole test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio.from_thread
import msgspec
import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dante.events.natsd import NatsServer
from dante.events.store import EventStore
from dante.events.streams import ensure_log
from dante.schemas.codec import COMMAND_TYPES
from dante.schemas.commands import Command
from dante.services.commands import CommandService

ROUTES = sorted(COMMAND_TYPES)


class Harness:
    def __init__(self, url: str) -> None:
        self.url = url
        self.replies: list[dict[str, Any]] = []

    async def start(self) -> None:
        self.nc = await nats.connect(self.url)
        await ensure_log(self.nc.jetstream())
        self.store = EventStore(self.nc)
        self.service = CommandService(self.nc, self.store)
        await self.service.start()

    async def stop(self) -> None:
        await self.service.stop()
        await self.nc.close()

    async def send(self, subject: str, body: bytes) -> dict[str, Any]:
        msg = await self.nc.request(subject, body, timeout=10)
        reply: dict[str, Any] = msgspec.json.decode(msg.data)
        self.replies.append(reply)
        return reply

    async def log(self) -> list[Any]:
        return [r.event async for r in self.store.read()]


@pytest.fixture
def harness(nats_server: NatsServer) -> Iterator[tuple[Harness, Any]]:
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        h = Harness(nats_server.url)
        portal.call(h.start)
        try:
            yield h, portal
            # Every stored event decodes (reading decodes), and the log holds exactly what
            # the accepted commands said they appended.
            logged = portal.call(h.log)
            appended = sum(len(r.get("appended", [])) for r in h.replies if r["ok"])
            assert len(logged) == appended
        finally:
            portal.call(h.stop)


identities = st.sampled_from(["alice", "bob", "zed_9", "x"])


def _valid_shaped(cls: type[Command[Any]]) -> st.SearchStrategy[bytes]:
    def encode(obj: Command[Any]) -> bytes | None:
        try:
            return msgspec.json.encode(obj)
        except (TypeError, ValueError, UnicodeEncodeError, OverflowError):
            return None

    encoded: st.SearchStrategy[Any] = st.from_type(cls).map(encode)
    return encoded.filter(lambda b: b is not None)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_input_gets_a_reply_and_the_log_only_grows_by_valid_events(
    harness: tuple[Harness, Any], data: st.DataObject
) -> None:
    h, portal = harness
    role, verb = data.draw(st.sampled_from(ROUTES))
    identity = data.draw(identities)
    body = data.draw(
        st.one_of(
            st.binary(max_size=400),
            _valid_shaped(COMMAND_TYPES[(role, verb)]),
        )
    )
    reply = portal.call(h.send, f"dante.cmd.{role}.{identity}.{verb}", body)
    assert isinstance(reply["ok"], bool)
    if not reply["ok"]:
        assert reply["error"]["code"] and reply["error"]["message"]
        assert reply.get("appended", []) == []


def test_log_after_fuzzing_holds_only_events_of_accepted_commands(
    harness: tuple[Harness, Any],
) -> None:
    h, portal = harness
    for role, verb in ROUTES:
        if COMMAND_TYPES[(role, verb)].QUERY:
            continue  # queries have defaults for everything: "{}" is a valid one
        for body in (b"", b"{}", b"null", b'{"command_id": "c"}', b"\x00" * 50):
            reply = portal.call(h.send, f"dante.cmd.{role}.alice.{verb}", body)
            assert reply["ok"] is False
            assert reply["error"]["code"] == "malformed"
    assert portal.call(h.log) == []
