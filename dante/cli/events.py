"""`dante events`: browse the log, one line per event (or the full events as JSON lines)."""

from __future__ import annotations

import os
import sys
from collections import deque
from typing import Annotated, Final

import msgspec
from cyclopts import Parameter

from dante.cli.operator_log import LogUnavailable, error, operator_log
from dante.client.connect import EXIT_USAGE, resolve_url
from dante.events.records import RawMessage
from dante.events.store import EventStore
from dante.events.subjects import EVENT_PREFIX, subject_of

_TIME: Final = "%Y-%m-%d %H:%M:%S"


class _Line(msgspec.Struct, frozen=True):
    seq: int
    subject: str
    stored_at: str | None
    event: msgspec.Raw


class _Shown:
    """Which events to show, and how: a line each, or the stored event as JSON."""

    def __init__(self, field: str, value: str | None, *, json: bool) -> None:
        self._field, self._value, self._json = field, value, json
        self._mark = f'"{field}":'.encode() + msgspec.json.encode(value) if value else None
        self._encoder = msgspec.json.Encoder()

    def lines(self, chunk: list[RawMessage]) -> list[str]:
        from dante.events.codec import decode_event
        from dante.events.describe import describe
        from dante.schemas.codec import DecodeError

        out: list[str] = []
        for seq, subject, stored_at, data in chunk:
            # A quick test of the stored form first; the decoded event is checked again.
            if self._mark is not None and self._mark not in data:
                continue
            try:
                event = decode_event(data)
            except DecodeError as exc:
                out.append(f"{seq:>9}  {'':19}  {'(unreadable)':<20}  {exc.reason}")
                continue
            if self._value and getattr(event, self._field, None) != self._value:
                continue
            if self._json:
                at = stored_at.isoformat() if stored_at else None
                out.append(
                    self._encoder.encode(_Line(seq, subject, at, msgspec.Raw(data))).decode()
                )
            else:
                where = subject.removeprefix(f"{EVENT_PREFIX}.")
                out.append(
                    f"{seq:>9}  {event.at:{_TIME}}  {type(event).__name__:<20}  {where:<28}  "
                    f"{describe(event)}"
                )
        return out


async def events(
    *,
    job: Annotated[str | None, Parameter(help="Only events that name this job.")] = None,
    provider: Annotated[
        str | None, Parameter(help="Only events that name this provider machine.")
    ] = None,
    wallet: Annotated[str | None, Parameter(help="Only events of this wallet.")] = None,
    from_seq: Annotated[int, Parameter(help="Start at this sequence.")] = 1,
    follow: Annotated[bool, Parameter(help="Keep showing new events as they come.")] = False,
    limit: Annotated[
        int | None, Parameter(help="Show at most this many events (the first that match).")
    ] = None,
    last: Annotated[
        int | None, Parameter(help="Show only the last this many events that match.")
    ] = None,
    json: Annotated[
        bool, Parameter(help="One JSON document per event: seq, subject, stored_at, event.")
    ] = False,
) -> int:
    """Show the log's events in order, one line each, from --from-seq on.

    --job shows every event that names the job (its own, its GPU reservations, the money
    moved for it), --provider every event that names the machine (its own and its
    assignments), --wallet the wallet's events. --limit stops after the first N that match,
    --last shows the last N. With --follow, new events are shown as they are appended, until
    Ctrl-C (after the --last ones, if given).
    """
    given = {"--job": job, "--provider": provider, "--wallet": wallet}
    chosen = [name for name, value in given.items() if value]
    misuse = _misuse(chosen, from_seq=from_seq, limit=limit, last=last)
    if misuse:
        error(misuse)
        return EXIT_USAGE
    subjects = f"{EVENT_PREFIX}.>" if wallet is None else subject_of("wallet", wallet)
    shown = _Shown("job_id" if job else "provider_id", job or provider, json=json)
    try:
        async with operator_log(resolve_url(None), name="dante-events") as store:
            if last is not None:
                from_seq = await _print_last(
                    store, shown, subjects, from_seq, last=last, filtered=bool(chosen)
                )
                if not follow:
                    return 0
            await _print_from(store, shown, subjects, from_seq, follow=follow, limit=limit)
    except LogUnavailable as exc:
        error(str(exc))
        return exc.exit_code
    except BrokenPipeError:
        # `dante events | head`: the reader has had enough; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def _misuse(chosen: list[str], *, from_seq: int, limit: int | None, last: int | None) -> str:
    """What is wrong with the options, or ''."""
    if len(chosen) > 1:
        return f"filter by one of --job, --provider or --wallet, not {' and '.join(chosen)}"
    if from_seq < 1:
        return "--from-seq must be 1 or more"
    if limit is not None and last is not None:
        return "give --limit (the first events) or --last (the last ones), not both"
    for name, count in (("--limit", limit), ("--last", last)):
        if count is not None and count < 1:
            return f"{name} must be 1 or more"
    return ""


async def _print_last(
    store: EventStore, shown: _Shown, subjects: str, from_seq: int, *, last: int, filtered: bool
) -> int:
    """Print the last `last` events that match, up to the end of the log now; return the
    sequence after that end."""
    stop = await store.last_seq()
    # Unfiltered, every event read is shown: reading the last `last` sequences will do.
    start = from_seq if filtered else max(from_seq, stop - last + 1)
    latest: deque[str] = deque(maxlen=last)
    async for chunk in store.read_chunks(start, stop=stop, subjects=subjects):
        latest.extend(shown.lines(chunk))
    if latest:
        print("\n".join(latest), flush=True)
    return max(from_seq, stop + 1)


async def _print_from(
    store: EventStore,
    shown: _Shown,
    subjects: str,
    from_seq: int,
    *,
    follow: bool,
    limit: int | None,
) -> None:
    """Print the events that match from `from_seq` on, at most `limit` of them."""
    left = limit
    async for chunk in store.read_chunks(from_seq, follow=follow, subjects=subjects):
        lines = shown.lines(chunk) if left is None else shown.lines(chunk)[:left]
        if lines:
            print("\n".join(lines), flush=True)
        if left is not None:
            left -= len(lines)
            if left == 0:
                return
