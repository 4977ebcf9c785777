"""This agent's instructions (assignments and stops), from its own durable consumer.

The consumer is `agent-<owner>-<provider_id>` on `DANTE_DISPATCH`, filtered to
`dante.agent.<owner>.<provider_id>.>`, so nats-server can limit an account to its own
instructions. It is created by `pull_subscribe`, whose create request carries the filter in
its subject. Each message is acknowledged only after the handler has journaled what it says;
a message that could not be journaled is redelivered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import anyio
import msgspec
import nats.errors
import structlog
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from dante.events.streams import DISPATCH_PREFIX, DISPATCH_STREAM
from dante.schemas.dispatch import Instruction

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

log = structlog.get_logger(__name__)

_instruction = msgspec.json.Decoder(Instruction)
FETCH_BATCH: Final = 16
#: How long one fetch waits for a message; a message arriving meanwhile is delivered at once.
FETCH_WAIT_S: Final = 5.0
ACK_WAIT_S: Final = 30.0

Handler = Callable[[Instruction], Awaitable[None]]


def consumer_name(owner: str, provider_id: str) -> str:
    return f"agent-{owner}-{provider_id}"


def consumer_filter(owner: str, provider_id: str) -> str:
    return f"{DISPATCH_PREFIX}.{owner}.{provider_id}.>"


async def consume(js: JetStreamContext, owner: str, provider_id: str, handle: Handler) -> None:
    """Hand every instruction to `handle`, in order, until cancelled; reconnects are waited
    out and any failure is retried."""
    subscription = None
    subscription_name = consumer_name(owner, provider_id)
    failing = False
    try:
        while True:
            try:
                if subscription is None:
                    subscription = await js.pull_subscribe(
                        consumer_filter(owner, provider_id),
                        durable=subscription_name,
                        stream=DISPATCH_STREAM,
                        config=ConsumerConfig(
                            ack_policy=AckPolicy.EXPLICIT,
                            deliver_policy=DeliverPolicy.ALL,
                            ack_wait=ACK_WAIT_S,
                            max_deliver=-1,
                        ),
                    )
                    log.info("listening for instructions", consumer=subscription_name)
                try:
                    messages = await subscription.fetch(FETCH_BATCH, timeout=FETCH_WAIT_S)
                except nats.errors.TimeoutError:
                    continue
                for message in messages:
                    await _deliver(message, handle)
                if failing:
                    log.info("receiving instructions again")
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("cannot receive instructions; retrying", error=repr(exc))
                failing = True
                await anyio.sleep(1.0)
    finally:
        if subscription is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                try:
                    await subscription.unsubscribe()
                except Exception as exc:
                    log.debug("unsubscribe failed", error=repr(exc))


async def _deliver(message: Msg, handle: Handler) -> None:
    try:
        instruction = _instruction.decode(message.data)
    except msgspec.DecodeError as exc:
        log.warning("unreadable instruction dropped", subject=message.subject, error=str(exc))
        await message.term()
        return
    try:
        await handle(instruction)
    except Exception as exc:
        log.exception("instruction not handled; it will come again", error=repr(exc))
        await message.nak(delay=5)
        return
    await message.ack()
