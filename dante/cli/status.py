"""`dante status`: is the platform up, how big is its log, what runs on it."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any

import msgspec
from cyclopts import Parameter

from dante.cli.connect import EXIT_REJECTED, ConnectFailed, api_prefix, connect, resolve_url
from dante.cli.credentials import operator_credential
from dante.events.streams import DEFAULT_API_PREFIX, STREAM


async def _ping(nc: Any, timeout: float = 0.5) -> list[dict[str, Any]]:
    """Every instance of the command service that answers a micro PING."""
    inbox = nc.new_inbox()
    found: list[dict[str, Any]] = []
    sub = await nc.subscribe(inbox)
    await nc.publish("$SRV.PING.dante", b"", reply=inbox)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=timeout)
            except TimeoutError:
                break  # the first quiet interval ends the gathering
            found.append(msgspec.json.decode(msg.data))
    finally:
        await sub.unsubscribe()
    return found


async def gather_status(nc: Any, *, api_prefix: str = DEFAULT_API_PREFIX) -> dict[str, Any]:
    """`api_prefix`: `CLIENT_API_PREFIX` when connected as the operator (see nats.conf)."""
    from dante.handlers.client import Client, CommandError, PlatformUnavailable
    from dante.schemas.commands import GetPlatformStatus

    report: dict[str, Any] = {"services": await _ping(nc)}
    try:
        info = await nc.jetstream(prefix=api_prefix).stream_info(STREAM)
        report["stream"] = {
            "messages": info.state.messages,
            "bytes": info.state.bytes,
            "first_seq": info.state.first_seq,
            "last_seq": info.state.last_seq,
        }
    except Exception as exc:
        report["stream"] = {"error": str(exc)}
    if report["services"]:
        try:
            summary = await Client(nc, "operator", "operator", timeout=3, tries=1).send(
                GetPlatformStatus()
            )
            report["summary"] = summary
        except (CommandError, PlatformUnavailable) as exc:
            report["summary"] = {"error": str(exc)}
    return report


def _print_human(report: dict[str, Any]) -> None:
    services = report["services"]
    print(
        f"command service: {len(services)} instance(s) answering"
        if services
        else "command service: not answering"
    )
    stream = report.get("stream", {})
    if "error" in stream:
        print(f"event log:       unavailable ({stream['error']})")
    else:
        print(f"event log:       {stream['messages']} events, last sequence {stream['last_seq']}")
    summary = report.get("summary")
    if isinstance(summary, dict) and "error" not in summary:
        for key, value in summary.items():
            print(f"{key + ':':<17}{value}")


async def status(
    *,
    nats_url: Annotated[str | None, Parameter(help="The platform's NATS URL.")] = None,
    json: Annotated[bool, Parameter(help="Print one JSON document.")] = False,
) -> int:
    """Show whether the platform answers, its event log, providers and jobs.

    Exit code 0 when the command service answers, 1 when NATS answers but the service does
    not (or refuses the login: the platform may still be starting), 3 when NATS cannot be
    reached. Scripts use it to wait for readiness. Uses the operator credential `dante up`
    wrote for the user who started it.
    """
    url = resolve_url(nats_url)
    try:
        nc = await connect(url, name="dante-status", credential="operator")
    except ConnectFailed as exc:
        if json:
            print(msgspec.json.encode({"ok": False, "error": str(exc)}).decode())
        else:
            print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    prefix = api_prefix(operator_credential(url))
    try:
        report = await asyncio.wait_for(gather_status(nc, api_prefix=prefix), 15)
    finally:
        await nc.close()
    report["ok"] = bool(report["services"])
    if json:
        print(msgspec.json.encode(report).decode())
    else:
        _print_human(report)
    return 0 if report["ok"] else EXIT_REJECTED
