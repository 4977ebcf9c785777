"""How the command client and the event store ride out a cluster's failover, against a real
nats-server: a command whose request was lost is sent again (the earlier one still open), a
command nobody hears is asked again for a while and then reported, an append nobody takes is
retried until its patience runs out (tests/test_failover.py has the whole cluster)."""

from __future__ import annotations

import time

import anyio
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from dante.client.commands import (
    FIRST_WAIT_S,
    NO_RESPONDERS_GRACE_S,
    Client,
    PlatformUnavailable,
    command_subject,
    new_command_id,
)
from dante.events.errors import EventStoreError
from dante.events.records import Append
from dante.events.store import EventStore
from dante.schemas.codec import ok_reply
from dante.schemas.commands import Deposit
from tests.factories import deposit

pytestmark = pytest.mark.anyio

SUBJECT = command_subject("renter", "alice", Deposit.VERB)


def _deposit() -> Deposit:
    return Deposit(command_id=new_command_id(), amount=5)


async def test_each_try_waits_twice_the_last_and_the_last_the_whole_timeout(nc: NATS) -> None:
    assert Client(nc, "renter", "alice").waits() == [2.0, 4.0, 8.0, 10.0]
    assert Client(nc, "renter", "alice", timeout=3, tries=3).waits() == [2.0, 3.0, 3.0]
    assert Client(nc, "renter", "alice", timeout=1, tries=1).waits() == [1.0]


async def test_a_lost_request_is_sent_again_after_the_first_wait(nc: NATS) -> None:
    seen: list[bytes] = []

    async def answer_the_second(msg: Msg) -> None:
        seen.append(msg.data)
        if len(seen) > 1:
            await msg.respond(ok_reply({"n": len(seen)}))

    await nc.subscribe(SUBJECT, cb=answer_the_second)
    started = time.monotonic()
    answer = await Client(nc, "renter", "alice").send(_deposit())
    took = time.monotonic() - started
    assert answer == {"n": 2}
    assert len(seen) == 2 and seen[0] == seen[1]  # the same command, the same id
    assert FIRST_WAIT_S <= took < FIRST_WAIT_S + 1.5


async def test_a_slow_answer_to_the_first_request_is_not_thrown_away(nc: NATS) -> None:
    seen: list[Msg] = []

    async def answer_the_first_late(msg: Msg) -> None:
        seen.append(msg)
        if len(seen) == 2:  # the second try came; now the first one is answered
            await seen[0].respond(ok_reply("first"))

    await nc.subscribe(SUBJECT, cb=answer_the_first_late)
    assert await Client(nc, "renter", "alice").send(_deposit()) == "first"
    assert len(seen) == 2


async def test_nobody_listening_is_asked_again_then_reported(nc: NATS) -> None:
    started = time.monotonic()
    with pytest.raises(PlatformUnavailable, match="is the platform running"):
        await Client(nc, "renter", "alice").send(_deposit())
    took = time.monotonic() - started
    assert NO_RESPONDERS_GRACE_S <= took < NO_RESPONDERS_GRACE_S + 1.5


async def test_a_service_that_comes_back_within_the_grace_answers(nc: NATS) -> None:
    async def come_back() -> None:
        await anyio.sleep(1.0)

        async def answer(msg: Msg) -> None:
            await msg.respond(ok_reply("back"))

        await nc.subscribe(SUBJECT, cb=answer)

    async with anyio.create_task_group() as tg:
        tg.start_soon(come_back)
        assert await Client(nc, "renter", "alice").send(_deposit()) == "back"


async def test_an_append_nobody_takes_is_retried_until_its_patience_runs_out(nc: NATS) -> None:
    store = EventStore(nc, patience=1.0)  # no log set up: nothing listens on its subjects
    started = time.monotonic()
    with pytest.raises(EventStoreError, match="is the log set up"):
        await store.append(Append(event=deposit("alice", 5), expected=0))
    assert 1.0 <= time.monotonic() - started < 2.5


async def test_an_append_lands_once_the_stream_is_there(nc: NATS) -> None:
    from dante.events.streams import ensure_log

    store = EventStore(nc)
    async with anyio.create_task_group() as tg:

        async def set_up_later() -> None:
            await anyio.sleep(0.5)
            await ensure_log(nc.jetstream())

        tg.start_soon(set_up_later)
        appended = await store.append(Append(event=deposit("alice", 5), expected=0))
    assert appended.seqs == (1,)
    assert await store.last_seq() == 1
