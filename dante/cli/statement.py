"""`dante jobs statement ID`: one job's whole story, every event, tick, charge and fee, with
the digest that both the renter and the provider can compare.

The lead registers `statement` under `dante jobs`. The renter and the account of a provider
that ran the job ask the same way: the platform knows which side an account is on. A stored
login that says it is a provider account asks on the provider's side, as --provider does.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Final

import msgspec
from cyclopts import Parameter

from dante.client.connect import (
    EXIT_REJECTED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ConnectFailed,
    connect,
    resolve_url,
)

if TYPE_CHECKING:
    from dante.schemas.statements import AttemptStatement, JobStatement

_TIME: Final = "%Y-%m-%d %H:%M:%S"


def _dgpu(amount: int) -> str:
    from dante.schemas.money import format_dgpu

    return f"{format_dgpu(amount)} dGPU"


def _print_attempt(attempt: AttemptStatement) -> None:
    from dante.events.describe import gpu_seconds
    from dante.schemas.money import format_dgpu

    ended = attempt.ended or "running"
    print(
        f"attempt {attempt.attempt} on {attempt.provider_id} ({attempt.provider_owner}), GPUs "
        f"{attempt.gpu_indices}, {format_dgpu(attempt.price_udgpu)} dGPU/GPU-h, fee "
        f"{attempt.fee_bps / 100:g}%: {ended}"
    )
    times = [("assigned", attempt.assigned_at), ("started", attempt.started_at)]
    times.append(("ended", attempt.ended_at))
    print("  " + ", ".join(f"{name} {at:{_TIME}}" for name, at in times if at is not None))
    print(f"  usage: {len(attempt.usage)} tick(s), {gpu_seconds(attempt.gpu_ms)}")
    if attempt.simulated:
        print(
            "  simulated GPUs: the telemetry below was made up by the agent, not measured "
            "(the GPU time is real)"
        )
    for line in attempt.usage:
        measured = "; ".join(
            f"GPU {s.index} {gpu_seconds(s.gpu_ms)}"
            + "".join(
                f" {value}{unit}"
                for value, unit in (
                    (s.utilization_pct, "%"),
                    (s.memory_used_mb, " MB"),
                    (s.power_w, " W"),
                    (s.temperature_c, " °C"),
                )
                if value is not None
            )
            + (" (simulated)" if s.simulated else "")
            for s in line.samples
        )
        print(f"    tick {line.tick:>4}  {line.ended_at:{_TIME}}  {measured}  (seq {line.seq})")
    for charge in attempt.charges:
        uncovered = f", {_dgpu(charge.uncovered_udgpu)} uncovered" if charge.uncovered_udgpu else ""
        print(
            f"    charge seq {charge.seq}: {_dgpu(charge.amount_udgpu)} to "
            f"{gpu_seconds(charge.total_gpu_ms)} (fee {_dgpu(charge.fee_udgpu)}, "
            f"{charge.provider_wallet} {_dgpu(charge.provider_credit_udgpu)}){uncovered}"
        )
    print(
        f"  held {_dgpu(attempt.held_udgpu)}, charged {_dgpu(attempt.charged_udgpu)} (fee "
        f"{_dgpu(attempt.fee_udgpu)}, provider {_dgpu(attempt.provider_credit_udgpu)}), released "
        f"{_dgpu(attempt.released_udgpu)}, still held {_dgpu(attempt.hold_udgpu)}"
    )
    if attempt.refunded_udgpu:
        print(
            f"  refunded {_dgpu(attempt.refunded_udgpu)}: the attempt was lost to its "
            "provider, so it costs nothing"
        )


def _print_human(statement: JobStatement) -> None:
    from dante.events.describe import gpu_seconds

    name = f' "{statement.name}"' if statement.name else ""
    print(f"job {statement.job_id}{name} of {statement.renter}: {statement.state}")
    for attempt in statement.attempts:
        _print_attempt(attempt)
    print("events:")
    for entry in statement.events:
        print(f"  {entry.seq:>9}  {entry.at:{_TIME}}  {entry.type:<18}  {entry.summary}")
    uncovered = (
        f", {_dgpu(statement.uncovered_udgpu)} not covered" if statement.uncovered_udgpu else ""
    )
    print(
        f"total: {gpu_seconds(statement.gpu_ms)}, charged {_dgpu(statement.charged_udgpu)} "
        f"(platform fee {_dgpu(statement.fee_udgpu)}, provider "
        f"{_dgpu(statement.provider_credit_udgpu)}){uncovered}; held "
        f"{_dgpu(statement.held_udgpu)}, released {_dgpu(statement.released_udgpu)}"
        + (f"; refunded {_dgpu(statement.refunded_udgpu)}" if statement.refunded_udgpu else "")
    )
    print(
        f"digest {statement.digest} (SHA-256 chain over {len(statement.events)} events, "
        f"to sequence {statement.position})"
    )


class _Failed(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


async def fetch_statement(
    url: str, job_id: str, *, to_seq: int | None, provider: bool
) -> JobStatement:
    """Ask the platform, as the logged-in account, for a job's statement."""
    from dante.client.commands import Client, CommandError, PlatformUnavailable
    from dante.client.credentials import CredentialError, user_credential
    from dante.schemas.commands import GetJobStatement, GetProviderJobStatement

    try:
        credential = user_credential(url)
    except CredentialError as exc:
        raise _Failed(str(exc), EXIT_USAGE) from None
    if credential is None:
        raise _Failed(
            "you are not logged in: run `dante login`, or set DANTE_USERNAME and DANTE_PASSWORD",
            EXIT_REJECTED,
        )
    try:
        nc = await connect(url, name="dante-statement", credential=credential)
    except ConnectFailed as exc:
        raise _Failed(str(exc), exc.exit_code) from None
    as_provider = provider or credential.role == "provider"
    query = (
        GetProviderJobStatement(job_id=job_id, to_seq=to_seq)
        if as_provider
        else GetJobStatement(job_id=job_id, to_seq=to_seq)
    )
    client = Client(nc, "provider" if as_provider else "renter", credential.username)
    try:
        return await client.ask(query)
    except CommandError as exc:
        raise _Failed(str(exc), EXIT_REJECTED) from None
    except PlatformUnavailable as exc:
        raise _Failed(str(exc), EXIT_UNREACHABLE) from None
    finally:
        await nc.close()


async def statement(
    job_id: str,
    /,
    *,
    to_seq: Annotated[
        int | None,
        Parameter(help="As of this sequence, to compare digests with the other side at one point."),
    ] = None,
    provider: Annotated[
        bool,
        Parameter(
            help="Ask on the provider's side only (not needed: a provider account that ran "
            "the job gets its statement without it)."
        ),
    ] = False,
    json: Annotated[bool, Parameter(help="Print the statement as one JSON document.")] = False,
) -> int:
    """Show a job's statement: every event of its life with times, every usage tick with its
    GPU time and telemetry, the price, charges, fee, release and total, and the digest.

    The renter and the provider each run this and compare the digest: equal digests mean
    both see the same events at the same sequences. Exit 0, 1 when refused, 2 for a usage
    error, 3 when the platform cannot be reached.
    """
    if to_seq is not None and to_seq < 1:
        print("error: --to-seq must be 1 or more", file=sys.stderr)
        return EXIT_USAGE
    try:
        found = await fetch_statement(resolve_url(None), job_id, to_seq=to_seq, provider=provider)
    except _Failed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if json:
        print(msgspec.json.encode(found).decode())
    else:
        _print_human(found)
    return 0
