"""This agent's instructions (assignments and stops), from its own durable consumer.

The platform creates the consumer `agent~<owner>~<provider_id>` on `DANTE_DISPATCH`,
filtered to `dante.agent.<owner>.<provider_id>.>`, when the machine registers; the agent
only binds to it, fetches and acknowledges, which is all nats-server lets it do. Until the
platform has made it, fetching fails and is tried again. Each message is acknowledged only
after the handler has journaled what it says; a message that could not be journaled (or
whose acknowledgement was lost with the connection) is redelivered, and the journal knows
it. `js` is asked for the connection of the moment before every fetch: when the agent's
`Link` has replaced a connection nats-py gave up on, the consumer is bound again on the new
one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import anyio
import msgspec
import nats.errors
import structlog
from nats.js.errors import NotFoundError, ServiceUnavailableError

from dante.events.subjects import DISPATCH_STREAM, agent_consumer_name
from dante.schemas.dispatch import Instruction

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

log = structlog.get_logger(__name__)

_instruction = msgspec.json.Decoder(Instruction)
FETCH_BATCH: Final = 16
#: How long one fetch waits for a message; a message arriving meanwhile is delivered at once.
FETCH_WAIT_S: Final = 5.0

Handler = Callable[[Instruction], Awaitable[None]]


async def consume(
    js: Callable[[], JetStreamContext], owner: str, provider_id: str, handle: Handler
) -> None:
    """Hand every instruction to `handle`, in order, until cancelled; reconnects are waited
    out, a new connection is bound to, and any failure is retried."""
    name = agent_consumer_name(owner, provider_id)
    subscription: JetStreamContext.PullSubscription | None = None
    bound: JetStreamContext | None = None
    problem = ""
    try:
        while True:
            try:
                current = js()
                if subscription is not None and current is not bound:
                    log.info("binding to our consumer again, on the new connection")
                    await _unsubscribe(subscription)
                    subscription = None
                if subscription is None:
                    subscription = await current.pull_subscribe_bind(
                        durable=name, stream=DISPATCH_STREAM
                    )
                    bound = current
                messages = await subscription.fetch(FETCH_BATCH, timeout=FETCH_WAIT_S)
            except nats.errors.TimeoutError:
                messages = []
            except (ServiceUnavailableError, NotFoundError) as exc:
                # The platform makes the consumer once it has seen the registration.
                problem = _report(problem, "waiting for the platform to make our consumer", exc)
                await anyio.sleep(0.5)
                continue
            except Exception as exc:
                problem = _report(problem, "cannot receive instructions; retrying", exc)
                await anyio.sleep(1.0)
                continue
            if problem:
                log.info("receiving instructions", consumer=name)
                problem = ""
            for message in messages:
                await _deliver(message, handle)
    finally:
        if subscription is not None:
            await _unsubscribe(subscription)


async def _unsubscribe(subscription: JetStreamContext.PullSubscription) -> None:
    with anyio.CancelScope(shield=True), anyio.move_on_after(2):
        try:
            await subscription.unsubscribe()
        except Exception as exc:
            log.debug("unsubscribe failed", error=repr(exc))


def _report(previous: str, what: str, exc: Exception) -> str:
    """Log a problem once (not every retry); the problem now."""
    if previous != what:
        log.info(what, error=repr(exc))
    return what


async def _deliver(message: Msg, handle: Handler) -> None:
    try:
        instruction = _instruction.decode(message.data)
    except msgspec.DecodeError as exc:
        log.warning("unreadable instruction dropped", subject=message.subject, error=str(exc))
        await _settle(message.term())
        return
    log.debug(
        "instruction received",
        kind=type(instruction).__name__,
        job_id=instruction.job_id,
        attempt=instruction.attempt,
        seq=instruction.seq,
    )
    try:
        await handle(instruction)
    except Exception as exc:
        log.exception("instruction not handled; it will come again", error=repr(exc))
        await _settle(message.nak(delay=5))
        return
    await _settle(message.ack())


async def _settle(answer: Awaitable[None]) -> None:
    """Acknowledge (or not): on a connection just lost that fails, and the message comes
    again (after the consumer's ack wait), to be recognised by the journal."""
    try:
        await answer
    except Exception as exc:
        log.info("acknowledgement not sent; the instruction will come again", error=repr(exc))
