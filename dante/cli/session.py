"""Who acts and how they log in (`acting`), and one connection to the platform for a
command (`session`).

Who acts: `--user NAME` with DANTE_PASSWORD, or with the stored `dante login` of NAME; else
DANTE_USERNAME and DANTE_PASSWORD; else the stored login. A name without a password or login
(`--user NAME`, or DANTE_USERNAME alone) connects without logging in, which only a platform
without logins (a bare nats-server) accepts; one with logins refuses, and the refusal says
how to log in.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final, TypeVar

from dante.cli.options import (
    GUEST,
    UsageError,
    nats_url,
    shared,
)
from dante.client.credentials import PASSWORD_VAR, USERNAME_VAR
from dante.schemas.values import ACCOUNT_PATTERN

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from dante.client.commands import Client
    from dante.client.credentials import Credential


T = TypeVar("T")

_ACCOUNT: Final = re.compile(ACCOUNT_PATTERN)


def _checked(name: str) -> str:
    if not _ACCOUNT.match(name):
        raise UsageError(
            f"{name!r} is not an account name: 2 to 32 characters, lower-case letters, digits, "
            "'-' or '_', starting with a letter"
        )
    return name


def acting(url: str) -> tuple[str | None, Credential | None]:
    """Who acts on the platform at `url`, and the credential to log in with (None: none)."""
    from dante.client.credentials import Credential, CredentialError, stored_login, user_credential

    password = os.environ.get(PASSWORD_VAR)
    try:
        user = shared().user
        if user:
            name = _checked(user)
            if password:
                return name, Credential(username=name, secret=password, source="environment")
            stored = stored_login(url)
            return name, stored if stored is not None and stored.username == name else None
        named = os.environ.get(USERNAME_VAR)
        if named and not password:
            return _checked(named), None
        found = user_credential(url)
    except CredentialError as exc:
        raise UsageError(str(exc)) from None
    return (None, None) if found is None else (found.username, found)


# ── talking to the platform ─────────────────────────────────────────────────────────────


class Session:
    """One connection to the platform, and clients acting as the current user."""

    def __init__(self, nc: NATS, url: str, user: str | None) -> None:
        self.nc = nc
        self.url = url
        #: The account acting, if any.
        self.user = user

    def _account(self) -> str:
        if self.user is None:
            raise UsageError(
                "you are not logged in: run `dante login` (or `dante account create`), or set "
                "DANTE_USERNAME and DANTE_PASSWORD"
            )
        return self.user

    def renter(self) -> Client:
        from dante.client.commands import Client

        return Client(self.nc, "renter", self._account())

    def reader(self) -> Client:
        """For public reads (offers, quotes): the current account, or a guest when none."""
        from dante.client.commands import Client

        return Client(self.nc, "renter", self.user or GUEST)

    def provider(self) -> Client:
        from dante.client.commands import Client

        return Client(self.nc, "provider", self._account())


@asynccontextmanager
async def session(name: str = "dante-cli") -> AsyncIterator[Session]:
    from dante.client.connect import connect

    url = nats_url()
    user, credential = acting(url)
    nc = await connect(url, name=name, credential=credential)
    try:
        yield Session(nc, url, user)
    finally:
        await nc.close()


async def with_session(action: Callable[[Session], Awaitable[T]]) -> T:
    """Connect, run `action` with the session, close: the body of most commands."""
    async with session() as s:
        return await action(s)
