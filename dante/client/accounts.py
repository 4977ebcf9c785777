"""The client side of account operations: sign up, get a login token, log out.

Each takes a connection logged in the way the operation needs (see `dante.cli.account`):
a sign-up connection (`signup_credential(new_nonce())`), the account with its password, or
the account with the token to revoke.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Literal, TypeVar

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from dante.client.commands import PlatformUnavailable, answer_prefix, decode_answer, request
from dante.schemas.accounts import (
    AccountResult,
    IssueToken,
    RevokeToken,
    SignUp,
    TokenResult,
)
from dante.schemas.codec import encode
from dante.schemas.identity import (
    SIGNUP_SUBJECT,
    SIGNUP_USER,
    account_subject,
    reply_prefix,
    signup_subject,
)

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

T = TypeVar("T")


def new_nonce() -> str:
    """A sign-up connection's password: it names the private inbox of that connection."""
    return secrets.token_hex(16)


async def _call(nc: NATS, subject: str, payload: object, result: type[T], timeout: float) -> T:
    try:
        msg = await request(nc, subject, encode(payload), timeout)
    except NoRespondersError:
        raise PlatformUnavailable(
            "no Dante account service answers: is the platform running (`dante up`)?"
        ) from None
    except (NatsTimeout, TimeoutError):
        raise PlatformUnavailable("the platform did not answer in time; retry") from None
    return decode_answer(msg, result)


async def sign_up(
    nc: NATS,
    username: str,
    password: str,
    role: Literal["renter", "provider"] = "renter",
    *,
    timeout: float = 15.0,
) -> AccountResult:
    """Open an account (on a sign-up connection)."""
    request_ = SignUp(username=username, password=password, role=role)
    return await _call(nc, _signup_subject(nc), request_, AccountResult, timeout)


def _signup_subject(nc: NATS) -> str:
    """A sign-up connection asks on the subject its nonce names (the only one it may)."""
    prefix = answer_prefix(nc) or ""
    signups = f"{reply_prefix(SIGNUP_USER, '')}"
    if prefix.startswith(signups) and len(prefix) > len(signups):
        return signup_subject(prefix[len(signups) :])
    return SIGNUP_SUBJECT


async def issue_token(
    nc: NATS, username: str, *, label: str = "", timeout: float = 10.0
) -> TokenResult:
    """A login token for the account (on a connection that logged in with its password)."""
    subject = account_subject(username, "token")
    return await _call(nc, subject, IssueToken(label=label), TokenResult, timeout)


async def revoke_token(nc: NATS, username: str, token: str, *, timeout: float = 10.0) -> None:
    """Revoke a login token of the account (`dante logout`)."""
    subject = account_subject(username, "logout")
    await _call(nc, subject, RevokeToken(token=token), type(None), timeout)
