"""`dante status`: is the platform up, which of its parts answer (the command service, the
handlers and the views: micro services, `dante.services.presence`), how big is its log, what
runs on it, where its nats-server's monitoring is (when `dante up` runs that server: see
`UP_SERVICE`)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from cyclopts import Parameter

from dante.cli.options import Json, nats_url
from dante.cli.render import emit, pairs
from dante.cli.session import with_session
from dante.client.connect import EXIT_REJECTED, api_prefix, connect
from dante.client.credentials import operator_credential
from dante.events.subjects import DEFAULT_API_PREFIX, STREAM
from dante.schemas.views import PlatformSummary


async def _ping(
    nc: Any, names: tuple[str, ...], timeout: float = 0.5, verb: str = "PING"
) -> list[dict[str, Any]]:
    """Every instance of the micro services `names` that answers a PING (or `verb`)."""
    inbox = nc.new_inbox()
    found: list[dict[str, Any]] = []
    sub = await nc.subscribe(inbox)
    for name in names:
        await nc.publish(f"$SRV.{verb}.{name}", b"", reply=inbox)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=timeout)
            except TimeoutError:
                break  # the first quiet interval ends the gathering
            if msg.data:  # not the server's "no responders" for a name nobody answers as
                found.append(msgspec.json.decode(msg.data))
    finally:
        await sub.unsubscribe()
    return found


async def gather_status(nc: Any, *, api_prefix: str = DEFAULT_API_PREFIX) -> dict[str, Any]:
    """`api_prefix`: `CLIENT_API_PREFIX` when connected as the operator (see nats.conf)."""
    from dante.cli.up import UP_SERVICE
    from dante.client.commands import Client, CommandError, PlatformUnavailable
    from dante.schemas.commands import GetPlatformStatus
    from dante.services.commands import SERVICE_NAME
    from dante.services.presence import HANDLERS_SERVICE, VIEWS_SERVICE

    answers = await _ping(nc, (SERVICE_NAME, UP_SERVICE))
    stats = await _ping(nc, (HANDLERS_SERVICE, VIEWS_SERVICE), verb="STATS")
    report: dict[str, Any] = {
        "services": [found for found in answers if found.get("name") == SERVICE_NAME],
        # The HTTP monitoring of the nats-server each `dante up` runs (none on a cluster).
        "monitoring": sorted(
            {
                str(found["metadata"]["monitor"])
                for found in answers
                if found.get("name") == UP_SERVICE and "monitor" in (found.get("metadata") or {})
            }
        ),
        # How many of those run their server without it (`dante up` without --monitor-port).
        "monitoring_off": sum(
            1
            for found in answers
            if found.get("name") == UP_SERVICE and "monitor" not in (found.get("metadata") or {})
        ),
    }
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
    report["settings"] = await _settings(nc, api_prefix)
    report["parts"] = _parts(report["services"], stats, report["stream"].get("last_seq"))
    report["missing"] = [name for name, part in report["parts"].items() if not part["instances"]]
    if report["services"]:
        try:
            summary = await Client(nc, "operator", "operator", timeout=3, tries=1).send(
                GetPlatformStatus(), PlatformSummary
            )
            report["summary"] = summary
        except (CommandError, PlatformUnavailable) as exc:
            report["summary"] = {"error": str(exc)}
    return report


async def _settings(nc: Any, api_prefix: str) -> dict[str, Any]:
    """The platform's settings in force: the last recorded (`SettingsChanged`), else the
    defaults; `seq` 0 when none were recorded."""
    from dante.events.store import EventStore
    from dante.services.settings import settings_in_force

    try:
        settings, seq = await settings_in_force(EventStore(nc, api_prefix=api_prefix))
    except Exception as exc:
        return {"error": str(exc)}
    return {**settings.as_fields(), "seq": seq}


def _settings_line(settings: dict[str, Any]) -> str:
    if "error" in settings:
        return f"unavailable ({settings['error']})"
    said = (
        f"fee {settings['fee_bps']} bps, hold window {settings['hold_window_s']} s, "
        f"grace {settings['grace_s']} s, offline after {settings['offline_after_s']} s, "
        f"{settings['max_attempts']} attempts, start within {settings['start_timeout_s']} s"
    )
    seq = settings["seq"]
    return f"{said} ({f'recorded at sequence {seq}' if seq else 'the defaults'})"


def _parts(
    commands: list[dict[str, Any]], stats: list[dict[str, Any]], last_seq: int | None
) -> dict[str, dict[str, Any]]:
    """The platform's parts, each with the instances that answered (none: missing) and,
    for the handlers and the views, how far each is (from their STATS)."""
    from dante.services.presence import HANDLERS_SERVICE, VIEWS_SERVICE

    def endpoints(found: dict[str, Any]) -> list[dict[str, Any]]:
        return [e.get("data") or {} for e in found.get("endpoints") or []]

    handlers = [
        {"id": found.get("id"), "handlers": endpoints(found)}
        for found in stats
        if found.get("name") == HANDLERS_SERVICE
    ]
    views = []
    for found in stats:
        if found.get("name") != VIEWS_SERVICE:
            continue
        (state, *_) = endpoints(found) or [{}]
        position = int(state.get("position", 0))
        lag = None if last_seq is None else max(0, last_seq - position)
        views.append({"id": found.get("id"), "position": position, "lag": lag})
    parts = {
        "commands": [{"id": found.get("id")} for found in commands],
        "handlers": handlers,
        "views": views,
    }
    return {
        name: {"state": "up" if instances else "missing", "instances": instances}
        for name, instances in parts.items()
    }


def _part_line(name: str, part: dict[str, Any]) -> str:
    instances = part["instances"]
    if not instances:
        return "missing: no process that runs them answers"
    said = f"{len(instances)} instance(s)"
    if name == "handlers":
        each = [
            f"{h.get('handler')} {h.get('lag')} behind ({h.get('decided')} decided)"
            for instance in instances
            for h in instance["handlers"]
        ]
        return f"{said}: " + ", ".join(each)
    if name == "views":
        each = [f"at {v['position']} ({v['lag']} behind)" for v in instances]
        return f"{said}: " + ", ".join(each)
    return f"{said} answering"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "none"


def _print_human(report: dict[str, Any]) -> None:
    services = report["services"]
    lines = [
        (
            "command service",
            f"{len(services)} instance(s) answering" if services else "not answering",
        ),
        *((name, _part_line(name, report["parts"][name])) for name in ("handlers", "views")),
        (
            "NATS monitoring",
            ", ".join(report["monitoring"])
            or (
                "off (`dante up --monitor-port PORT` turns it on)"
                if report["monitoring_off"]
                else "not reported (no `dante up` with an embedded nats-server answers)"
            ),
        ),
    ]
    stream = report.get("stream", {})
    if "error" in stream:
        lines.append(("event log", f"unavailable ({stream['error']})"))
    else:
        lines.append(
            ("event log", f"{stream['messages']} events, last sequence {stream['last_seq']}")
        )
    if "settings" in report:
        lines.append(("settings", _settings_line(report["settings"])))
    summary = report.get("summary")
    if isinstance(summary, PlatformSummary):
        lines += [
            ("providers", _counts(summary.providers)),
            (
                "GPUs",
                f"{summary.gpus_total} in all: {summary.gpus_free} free, {summary.gpus_busy} busy",
            ),
            ("jobs", _counts(summary.jobs)),
            ("wallets", str(summary.wallets)),
        ]
    elif isinstance(summary, dict):
        lines.append(("summary", f"unavailable ({summary.get('error')})"))
    print(pairs(lines))


async def status(
    job_id: Annotated[
        str | None, Parameter(help="A job id: show that job (as `dante jobs status ID`).")
    ] = None,
    /,
    *,
    json_output: Json = False,
) -> int:
    """Show whether the platform answers, its parts (the command service, the handlers with
    how far behind the log each is, the views; a part no process answers for is missing),
    its event log, providers and jobs, and the HTTP monitoring address of the nats-server
    `dante up` started (none on a cluster); or one job.

    Exit code 0 when the command service answers, 1 when NATS answers but the service does
    not (or refuses the login: the platform may still be starting), 3 when NATS cannot be
    reached. Scripts use it to wait for readiness. Uses the operator credential `dante up`
    wrote for the user who started it.
    """
    if job_id is not None:
        from dante.cli.jobs import show_job

        return await with_session(lambda s: show_job(s, job_id, json=json_output))
    url = nats_url()
    nc = await connect(url, name="dante-status", credential="operator")
    prefix = api_prefix(operator_credential(url))
    try:
        report = await asyncio.wait_for(gather_status(nc, api_prefix=prefix), 15)
    finally:
        await nc.close()
    report["ok"] = bool(report["services"])
    if json_output:
        emit(report)
    else:
        _print_human(report)
    return 0 if report["ok"] else EXIT_REJECTED
