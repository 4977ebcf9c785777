"""`dante up`: the whole platform with one command, on an embedded nats-server or a cluster."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import anyio
from cyclopts import Parameter

from dante.cli.connect import EXIT_UNREACHABLE, Unreachable, connect
from dante.cli.logs import configure_logging
from dante.events.natsd import NatsServer, NatsServerError, default_config
from dante.events.streams import LogSettings


def default_data_dir() -> Path:
    """The per-user data folder: $DANTE_DATA_DIR, $XDG_DATA_HOME/dante or ~/.local/share/dante."""
    explicit = os.environ.get("DANTE_DATA_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dante"


async def _stop_on_signals(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for received in signals:
            print(f"\nstopping ({signal.Signals(received).name}) ...", file=sys.stderr, flush=True)
            scope.cancel()
            return


async def up(
    *,
    data_dir: Annotated[Path | None, Parameter(help="Where the log and the views live.")] = None,
    port: Annotated[int, Parameter(help="Port of the embedded nats-server.")] = 4222,
    monitor_port: Annotated[int, Parameter(help="Its monitoring port (-1: any free one).")] = 8222,
    replicas: Annotated[int, Parameter(help="Stream replicas (3 on a three-node cluster).")] = 1,
    demo: Annotated[
        bool, Parameter(help="Also start a simulated provider and a funded demo renter.")
    ] = False,
) -> int:
    """Start the platform: the event log, the command service, the handlers and the views.

    Runs until Ctrl-C or SIGTERM, then stops cleanly. A restart on the same data directory
    resumes where it stopped. With --nats-url, it uses that NATS server or cluster
    (comma-separated URLs) instead of starting one.
    """
    from dante.cli.common import shared
    from dante.handlers.platform import Platform, PlatformOptions

    nats_url = shared().nats_url

    configure_logging()
    data_dir = data_dir or default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    server: NatsServer | None = None
    url = nats_url
    if url is None:
        server = NatsServer(
            store_dir=data_dir / "nats",
            port=port,
            config=default_config(),
            monitor_port=monitor_port,
        )
        try:
            server.start()
        except NatsServerError as exc:
            print(f"error: the embedded nats-server did not start: {exc}", file=sys.stderr)
            print(f"hint: is port {port} taken (another `dante up`)? Try --port.", file=sys.stderr)
            return 1
        url = server.url
    try:
        nc = await connect(url, name="dante-platform", forever=True)
    except Unreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        if server is not None:
            server.stop()
        return EXIT_UNREACHABLE
    options = PlatformOptions(data_dir=data_dir, log_settings=LogSettings(replicas=replicas))
    platform = Platform(nc, options)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signals, tg.cancel_scope)
            tg.start_soon(platform.run)
            with anyio.fail_after(120):
                await platform.ready.wait()
            print(f"Dante is up on {url} (data in {data_dir}). Ctrl-C stops it.", flush=True)
            if demo:
                await _demo(tg, url, data_dir)
            print("ready", flush=True)
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await nc.drain()
            except Exception:  # already closed or the server went first
                await nc.close()
            if server is not None:
                server.stop()
    return 0


async def _demo(tg: anyio.abc.TaskGroup, url: str, data_dir: Path) -> None:
    del tg, url, data_dir
    print("--demo needs the provider agent, which is not built yet", file=sys.stderr)
