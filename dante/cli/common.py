"""What every command shares: who acts and where, connecting, and errors turned into exit codes.

The meta app (`dante.cli.app`) parses `--nats-url` and `--user` once, wherever they appear.
The URL is also exported as DANTE_NATS_URL, so commands built on `resolve_url` and processes a
command starts find the same platform. `guard` runs a command and turns the failures a person
can act on into one line (or, with `--json`, one JSON document with the typed code) and an
exit code; nothing expected ends in a traceback.

Who acts, and how they log in (`acting`): `--user NAME` with DANTE_PASSWORD, or with the
stored `dante login` of NAME; else DANTE_USERNAME and DANTE_PASSWORD; else the stored login.
A name without a password or login (`--user NAME`, or DANTE_USERNAME alone) connects without
logging in, which only a platform without logins (a bare nats-server) accepts; one with logins
refuses, and the refusal says how to log in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Final, TypeVar

from cyclopts import Parameter

from dante.cli.connect import (
    EXIT_REJECTED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ConnectFailed,
    Unreachable,
    resolve_url,
)

if TYPE_CHECKING:
    from anyio.abc import Process
    from nats.aio.client import Client as NATS

    from dante.cli.credentials import Credential
    from dante.handlers.client import Client

T = TypeVar("T")

#: `dante jobs wait` ran out of time before the job ended.
EXIT_TIMEOUT: Final = 4
#: Ctrl-C, as a shell reports death by SIGINT.
EXIT_INTERRUPTED: Final = 130

USER_ENV: Final = "DANTE_USERNAME"
PASSWORD_ENV: Final = "DANTE_PASSWORD"  # noqa: S105 (a name, not a secret)
URL_ENV: Final = "DANTE_NATS_URL"
#: Who asks public questions (offers, quotes) on a platform without logins, when no account
#: is given.
GUEST: Final = "guest"

_ACCOUNT: Final = re.compile(r"^[a-z][a-z0-9_-]{1,31}$")

#: `--json` on every command that shows something.
Json = Annotated[
    bool,
    Parameter(
        name="--json",
        negative=(),
        help="Print one JSON document instead of text; amounts are integer µdGPU in keys "
        "ending in _udgpu.",
    ),
]


class UsageError(Exception):
    """The command line asks for something malformed; nothing was sent (exit code 2)."""


@dataclass(frozen=True, slots=True)
class Shared:
    """The options of the meta app, as given on the command line (None when absent)."""

    nats_url: str | None = None
    user: str | None = None


_shared = Shared()


def set_shared(shared: Shared) -> None:
    """Record the meta app's options; export the URL so child processes see it too."""
    global _shared  # noqa: PLW0603 (parsed once per process, by the meta app)
    _shared = shared
    if shared.nats_url:
        os.environ[URL_ENV] = shared.nats_url


def shared() -> Shared:
    return _shared


def nats_url() -> str:
    """--nats-url, else DANTE_NATS_URL, else NATS_ADDRESS, else the local default."""
    return resolve_url(_shared.nats_url)


def _checked(name: str) -> str:
    if not _ACCOUNT.match(name):
        raise UsageError(
            f"{name!r} is not an account name: 2 to 32 characters, lower-case letters, digits, "
            "'-' or '_', starting with a letter"
        )
    return name


def acting(url: str) -> tuple[str | None, Credential | None]:
    """Who acts on the platform at `url`, and the credential to log in with (None: none)."""
    from dante.cli.credentials import (
        Credential,
        CredentialError,
        stored_login,
        user_credential,
    )

    password = os.environ.get(PASSWORD_ENV)
    try:
        if _shared.user:
            name = _checked(_shared.user)
            if password:
                return name, Credential(username=name, secret=password, source="environment")
            stored = stored_login(url)
            return name, stored if stored is not None and stored.username == name else None
        named = os.environ.get(USER_ENV)
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
        from dante.handlers.client import Client

        return Client(self.nc, "renter", self._account())

    def reader(self) -> Client:
        """For public reads (offers, quotes): the current account, or a guest when none."""
        from dante.handlers.client import Client

        return Client(self.nc, "renter", self.user or GUEST)

    def provider(self) -> Client:
        from dante.handlers.client import Client

        return Client(self.nc, "provider", self._account())


@asynccontextmanager
async def session(name: str = "dante-cli") -> AsyncIterator[Session]:
    from dante.cli.connect import connect

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


# ── failures ────────────────────────────────────────────────────────────────────────────

#: What to do about a rejection, by its code.
_HINTS: Final[dict[str, str]] = {
    "insufficient_funds": "add funds with `dante wallet deposit AMOUNT`",
    "unknown_job": "list your jobs with `dante jobs list`",
    "not_your_job": "list your jobs with `dante jobs list` (or check --user)",
    "no_matching_offer": "see what is offered with `dante market`",
    "price_cap_too_low": "raise --max-price, or see prices with `dante market`",
    "forbidden": "check who you act as (--user or DANTE_USERNAME)",
    "conflict": "retry in a moment",
    "unavailable": "retry in a moment",
}


class Hinted(Exception):
    """A failure with what to do about it in this command, instead of the usual hint."""

    def __init__(self, error: Exception, hint: str | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.hint = hint


@dataclass(frozen=True, slots=True)
class Failure:
    code: str
    message: str
    exit_code: int
    field: str | None = None
    hint: str | None = None


def failure_of(exc: BaseException) -> Failure | None:
    """The failure a person can act on, or None for a bug (which keeps its traceback)."""
    from dante.handlers.client import CommandError
    from dante.schemas.money import MoneyError

    match exc:
        case Hinted():
            found = failure_of(exc.error)
            return None if found is None else dataclasses.replace(found, hint=exc.hint)
        case UsageError() | MoneyError():
            return Failure("usage", str(exc), EXIT_USAGE)
        case CommandError():
            return Failure(
                exc.info.code,
                exc.info.message,
                EXIT_REJECTED,
                field=exc.info.field,
                hint=_HINTS.get(exc.info.code),
            )
        case _:
            return _unreachable(exc) or _transfer_failure(exc)


def _unreachable(exc: BaseException) -> Failure | None:
    from nats.errors import ConnectionClosedError, NoServersError

    from dante.handlers.client import PlatformUnavailable

    if isinstance(exc, Unreachable):
        hint = "start the platform with `dante up`, or point --nats-url at it"
        return Failure("unreachable", str(exc), EXIT_UNREACHABLE, hint=hint)
    if isinstance(exc, ConnectFailed):  # the login was refused
        return Failure("login_refused", str(exc), exc.exit_code)
    if isinstance(exc, PlatformUnavailable):
        return Failure("unreachable", str(exc), EXIT_UNREACHABLE)
    if isinstance(exc, ConnectionClosedError | NoServersError):
        message = f"lost the connection to the platform: {exc}"
        return Failure("unreachable", message, EXIT_UNREACHABLE)
    return None


def _transfer_failure(exc: BaseException) -> Failure | None:
    from dante.cli.job_output import UnsafeResults
    from dante.handlers.transfer import TransferError

    if isinstance(exc, TransferError):
        return Failure("transfer_failed", str(exc), EXIT_REJECTED, hint="run the command again")
    if isinstance(exc, UnsafeResults):
        return Failure("unsafe_results", str(exc), EXIT_REJECTED)
    return None


def report(failure: Failure, *, json: bool) -> int:
    """Say what went wrong: one line on stderr, or one JSON document on stdout."""
    if json:
        from dante.cli.render import emit

        error: dict[str, Any] = {"code": failure.code, "message": failure.message}
        if failure.field is not None:
            error["field"] = failure.field
        if failure.hint is not None:
            error["hint"] = failure.hint
        emit({"ok": False, "error": error})
    else:
        message = failure.message.rstrip(". ")
        line = f"{message}; {failure.hint}" if failure.hint else message
        print(f"error: {line}", file=sys.stderr, flush=True)
    return failure.exit_code


def guard(call: Callable[[], Any], *, json: bool) -> int:
    """Run a command (awaiting it if it is a coroutine); its exit code, failures reported."""
    try:
        result = call()
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception as exc:
        failure = failure_of(exc)
        if failure is None:
            raise
        return report(failure, json=json)
    return result if isinstance(result, int) else 0


async def stop_child(process: Process, grace_s: float) -> None:
    """Ask a child process to stop (SIGTERM); kill it if it still runs after `grace_s`."""
    import anyio

    if process.returncode is not None:
        return
    process.terminate()
    with anyio.move_on_after(grace_s):
        await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
