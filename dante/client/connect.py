"""Where the platform is, and connecting to it as someone, with errors a person can act on.

`connect(url, name=...)` logs in with the user's credential (DANTE_USERNAME and
DANTE_PASSWORD, else the stored `dante login`; see `dante.client.credentials`), with replies on
that account's own inbox, which is all its connection may subscribe to. The operator's
commands pass `credential="operator"`, an agent `machine=<provider id>`, the platform its
service user (`platform_credential`). Against a server without authentication (the tests'
default) a connection without a credential works as before.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal
from urllib.parse import ParseResult, urlparse

from nats.aio.client import Client as NATS
from nats.errors import AuthorizationError

from dante.client.commands import Refusals, listen_for_answers, watch_refusals
from dante.client.credentials import (
    PASSWORD_VAR,
    USERNAME_VAR,
    Credential,
    CredentialError,
    operator_credential,
    user_credential,
)
from dante.events.subjects import CLIENT_API_PREFIX, DEFAULT_API_PREFIX

DEFAULT_URL: Final = "nats://127.0.0.1:4222"

#: Exit codes shared by every command.
EXIT_REJECTED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3

#: `credential=` of `connect`: a given one, none at all, or the one for a user or operator.
CredentialChoice = Credential | Literal["user", "operator"] | None


class ConnectFailed(Exception):
    """The platform could not be used; `exit_code` is what the command should exit with."""

    exit_code: int = EXIT_UNREACHABLE


class Unreachable(ConnectFailed):
    """The platform's NATS server could not be reached."""


class LoginRefused(ConnectFailed):
    """The server refused the connection's credential (or it had none)."""

    exit_code = EXIT_REJECTED


class _RefusedWhileConnecting(Exception):
    pass


def _failure(
    exc: Exception, choice: CredentialChoice, credential: Credential | None, url: str
) -> ConnectFailed:
    """What a failed connect raises: a refused login, or an unreachable server."""
    if isinstance(exc, _RefusedWhileConnecting) or _is_auth_error(exc):
        return LoginRefused(refusal_message(choice, credential, url))
    return Unreachable(f"cannot reach the platform at {url}: {exc or type(exc).__name__}")


async def _discard(nc: NATS) -> None:
    """Close a client whose connect failed, and the socket nats-py may have left open."""
    with contextlib.suppress(Exception):
        await nc.close()
    transport = getattr(nc, "_transport", None)
    if transport is not None:
        with contextlib.suppress(Exception):
            transport.close()


def resolve_url(explicit: str | None = None) -> str:
    """--nats-url, else DANTE_NATS_URL, else NATS_ADDRESS, else the local default."""
    return (
        explicit
        or os.environ.get("DANTE_NATS_URL")
        or os.environ.get("NATS_ADDRESS")
        or DEFAULT_URL
    )


def servers(url: str) -> list[str]:
    """A comma-separated list of URLs (a cluster) as nats-py wants it."""
    return [u.strip() for u in url.split(",") if u.strip()]


def elsewhere_first(url: str, connected: ParseResult | None) -> str | None:
    """`url`'s servers, starting after the one `connected` is (for a connection meant for
    another node than that one's, with `dont_randomize`); None for a single server."""
    listed = servers(url)
    if len(listed) < 2:
        return None
    where = None if connected is None else (connected.hostname, connected.port)
    places = [(urlparse(server).hostname, urlparse(server).port) for server in listed]
    here = places.index(where) if where in places else 0
    return ",".join(listed[here + 1 :] + listed[: here + 1])


def resolve_credential(choice: CredentialChoice, url: str) -> Credential | None:
    if choice == "user":
        try:
            return user_credential(url)
        except CredentialError as exc:
            raise LoginRefused(str(exc)) from None
    if choice == "operator":
        return operator_credential(url)
    return choice


def api_prefix(credential: Credential | None) -> str:
    """Where a connection logged in with `credential` reaches JetStream's API: the
    platform's own account for its service user (and on a server without logins), else
    through nats.conf's imports: `nc.jetstream(prefix=api_prefix(credential))`."""
    if credential is None or credential.source == "platform":
        return DEFAULT_API_PREFIX
    return CLIENT_API_PREFIX


def _is_auth_error(error: BaseException) -> bool:
    return isinstance(error, AuthorizationError) or "authorization violation" in str(error).lower()


def refusal_message(choice: CredentialChoice, credential: Credential | None, url: str) -> str:
    """Why the server turned us away, and what to do about it."""
    if credential is None and choice == "operator":
        return (
            f"the platform at {url} refused the connection: there is no operator credential "
            "for it here. `dante up` writes one (operator.json in the config folder) for the "
            "user who started it, on the machine it runs on; run this there, as that user"
        )
    if credential is None:
        return (
            f"the platform at {url} refused the connection: you are not logged in. "
            f"Run `dante login` (or `dante account create`), or set {USERNAME_VAR} and "
            f"{PASSWORD_VAR}"
        )
    if credential.source == "signup":
        return (
            f"the platform at {url} refused a sign-up connection: too many accounts were "
            "opened from this address lately (try again later, or ask the operator), or the "
            "platform is still starting or not running"
        )
    what = {
        "environment": f"{USERNAME_VAR}/{PASSWORD_VAR}",
        "login": "the stored login (`dante login` again)",
        "operator": "the operator credential (restart `dante up` to write a fresh one)",
    }.get(credential.source, "the credential")
    return (
        f"the platform at {url} refused {credential.user!r} ({what}): wrong user name or "
        "password, or a revoked login; or the platform is still starting or not running"
    )


async def connect(
    url: str,
    *,
    name: str,
    forever: bool = False,
    credential: CredentialChoice = "user",
    machine: str | None = None,
    **options: Any,
) -> NATS:
    """Connect and log in; with `forever`, keep reconnecting with backoff (services, agents).

    `machine`: log in as the agent of that provider machine of the account (which may then
    also heartbeat and read its instructions; see dante/services/auth/permissions.py).

    Raises `LoginRefused` when the server refuses the credential (at once, without retrying
    it: every retry would count as one more failed login) and `Unreachable` when no server
    answers. Publishes the server refuses are reported to `dante.client.commands`, so a
    command sent where this login may not send fails at once with `forbidden`.
    """
    chosen = resolve_credential(credential, url)
    if chosen is not None and machine is not None:
        chosen = chosen.for_machine(machine)
    if chosen is not None:
        for key, value in chosen.connect_options().items():
            options.setdefault(key, value)
    refusals = Refusals()
    connecting = True
    given_cb: Callable[[Exception], Awaitable[None]] | None = options.pop("error_cb", None)

    async def on_error(error: Exception) -> None:
        if connecting and _is_auth_error(error):
            # Raised out of nats-py's connect loop, which would otherwise try again.
            raise _RefusedWhileConnecting
        await refusals.on_error(error)
        if given_cb is not None:
            await given_cb(error)

    nc = NATS()
    try:
        await nc.connect(
            servers=servers(url),
            name=name,
            connect_timeout=3,
            allow_reconnect=True,
            max_reconnect_attempts=-1 if forever else 3,
            reconnect_time_wait=1,
            error_cb=on_error,
            **options,
        )
    except Exception as exc:
        await _discard(nc)
        raise _failure(exc, credential, chosen, url) from exc
    except BaseException:  # cancelled, interrupted
        await _discard(nc)
        raise
    connecting = False
    if not nc.is_connected:
        # nats-py returns unconnected when the server never completed the login (no
        # callout answered in time): the platform is not (yet) running its login service.
        await _discard(nc)
        raise LoginRefused(refusal_message(credential, chosen, url))
    await _watch(nc, refusals, chosen)
    return nc


async def _watch(nc: NATS, refusals: Refusals, chosen: Credential | None) -> None:
    """Report refused publishes to the commands sent on `nc`, and bring them the platform's
    answers on the connection's reply prefix."""
    watch_refusals(nc, refusals)
    if chosen is not None and chosen.reply_prefix is not None:
        await listen_for_answers(nc, chosen.reply_prefix)
