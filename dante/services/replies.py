"""Where the platform answers a request: to the caller's own reply prefix, never elsewhere.

A client in the `PUBLIC` account reaches the platform through a service import, and
nats-server hands the service a stand-in (`_R_.…`) for whatever reply subject the client
named, so the service cannot check it: mallory could name `_INBOX_alice.x` and have her
answers delivered into alice's inbox. So the platform never answers to such a stand-in.
Clients name a token in the `Dante-Reply` header instead, and the answer goes to
`dante.reply.<owner>.<token>` (`dante.schemas.identity.reply_prefix`), `<owner>` being the
identity in the request's subject, which nats-server let only that identity publish to. The
`DANTE` account exports `dante.reply.>` to `PUBLIC` as a stream, and each connection may
subscribe only to its own prefix.

A request from the platform's own account (its processes, the tests' platform
connections) comes with the reply subject its sender named, and is answered there.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

import structlog

from dante.schemas.identity import REPLY_HEADER, REPLY_PREFIX, reply_owner

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.micro.request import Request

log = structlog.get_logger()

#: The prefix nats-server gives the reply subjects it puts in place of a client's across a
#: service import.
IMPORTED_REPLY: Final = "_R_."
_TOKEN: Final = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def answer_subject(subject: str, reply: str | None, headers: dict[str, str] | None) -> str | None:
    """Where to answer the request on `subject`; None when it may not be answered."""
    if reply and not reply.startswith(IMPORTED_REPLY):
        # Named in the platform's own account: the server would have replaced it otherwise.
        return reply
    token = (headers or {}).get(REPLY_HEADER)
    if token is None or not _TOKEN.match(token):
        return None
    owner = reply_owner(subject)
    if owner is None:
        return None
    return f"{REPLY_PREFIX}.{owner}.{token}"


async def answer(
    nc: NATS, subject: str, reply: str | None, headers: dict[str, str] | None, body: bytes
) -> bool:
    """Publish `body` as the answer to the request; False when it could not be answered
    (no token, or a token that is no NATS token: sent by hand, or by an old client)."""
    target = answer_subject(subject, reply, headers)
    if target is None:
        log.debug("request.unanswerable", subject=subject, reply=reply)
        return False
    await nc.publish(target, body)
    return True


async def respond(nc: NATS, request: Request, body: bytes) -> bool:
    """`answer` a `nats.micro` request: its own `respond` answers only the reply subject,
    which it does not show (hence the message it keeps)."""
    msg = request._msg  # noqa: SLF001
    return await answer(nc, msg.subject, msg.reply, msg.headers, body)
