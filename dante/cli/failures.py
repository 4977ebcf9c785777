"""Failures a person can act on, as one line (or, with `--json`, one JSON document with
the typed code) and an exit code: `guard` runs a command so that nothing expected ends in a
traceback."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from dante.cli.options import (
    EXIT_INTERRUPTED,
    UsageError,
)
from dante.client.connect import (
    EXIT_REJECTED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ConnectFailed,
    Unreachable,
)

#: What to do about a rejection, by its code.
_HINTS: Final[dict[str, str]] = {
    "insufficient_funds": "add funds with `dante wallet deposit AMOUNT`",
    "budget_reached": "raise it with `dante wallet budget`, or wait for the next day or month",
    "unknown_job": "list your jobs with `dante jobs list`",
    "not_your_job": "list your jobs with `dante jobs list` (or check --user)",
    "no_matching_offer": "see what is offered with `dante market`",
    "price_cap_too_low": "raise --max-price, or see prices with `dante market`",
    "forbidden": "check who you act as (--user or DANTE_USERNAME)",
    "conflict": "retry in a moment",
    "unavailable": "retry in a moment",
    "rate_limited": "this account sent more than the platform admits from one account; "
    "dante retried once already: wait that long and run it again",
    "quota_exceeded": "remove what this account no longer needs, or ask the operator",
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
    #: For `rate_limited`: how long to wait before trying again.
    retry_after_ms: int | None = None


def failure_of(exc: BaseException) -> Failure | None:
    """The failure a person can act on, or None for a bug (which keeps its traceback)."""
    from dante.client.commands import CommandError
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
                retry_after_ms=exc.info.retry_after_ms,
            )
        case _:
            return _unreachable(exc) or _transfer_failure(exc) or _payment_failure(exc)


def _payment_failure(exc: BaseException) -> Failure | None:
    from dante.chain.keys import KeypairError
    from dante.client.payments import PaymentError

    if isinstance(exc, KeypairError):
        return Failure("usage", str(exc), EXIT_USAGE, field="keypair")
    if isinstance(exc, PaymentError):
        return Failure("insufficient_funds", str(exc), EXIT_REJECTED, field="keypair")
    return None


def _unreachable(exc: BaseException) -> Failure | None:
    from nats.errors import ConnectionClosedError, NoServersError

    from dante.client.commands import PlatformUnavailable

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
    from dante.client.transfer import TransferError

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
        if failure.retry_after_ms is not None:
            error["retry_after_ms"] = failure.retry_after_ms
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


class UnsafeResults(Exception):
    """A results archive with entries that could reach outside its folder."""
