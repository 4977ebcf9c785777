"""`dante up`: the whole platform with one command, on an embedded nats-server or a cluster."""

from __future__ import annotations

import functools
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import anyio
from cyclopts import Parameter

from dante.cli.common import UsageError
from dante.cli.connect import ConnectFailed, connect
from dante.cli.credentials import (
    PASSWORD_VAR,
    USERNAME_VAR,
    Credential,
    platform_credential,
    save_operator,
    system_credential,
)
from dante.cli.logs import configure_logging
from dante.events.natsd import NatsServer, NatsServerError, default_config
from dante.events.streams import LogSettings
from dante.handlers.auth.installation import InstallationSecrets
from dante.runtime import settle_heap

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.client import Client as NATS

    from dante.cli.demo import DemoAgent
    from dante.handlers.auth.service import Identity

DEMO_RENTER: Final = ("demo-user", "demo-pass")
DEMO_PROVIDER: Final = "demo-provider"


#: The platform folds its whole log into memory before it serves: over a minute per million
#: events on a 2-core machine (bench/memory.py). This only catches a start that hangs.
READY_TIMEOUT_S: Final = 3600


def default_data_dir() -> Path:
    """The per-user data folder: $DANTE_DATA_DIR, $XDG_DATA_HOME/dante or ~/.local/share/dante."""
    explicit = os.environ.get("DANTE_DATA_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dante"


async def stop_on_signals(
    scope: anyio.CancelScope, first: list[Callable[[], Awaitable[None]]], who: str = ""
) -> None:
    """On SIGINT or SIGTERM, say so (as `who`, if given), run `first`, then cancel `scope`."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for received in signals:
            said = f"{who}: " if who else ""
            name = signal.Signals(received).name
            print(f"\n{said}stopping ({name}) ...", file=sys.stderr, flush=True)
            for stop in first:
                await stop()
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
    processes: Annotated[
        int | None,
        Parameter(
            help="2: the handlers and the views in a child process (`dante serve handlers "
            "views`), the commands here; 1: all in this process. Default: 2 where there are 2 "
            "or more CPUs."
        ),
    ] = None,
) -> int:
    """Start the platform: the event log, the command service, the handlers and the views.

    Runs until Ctrl-C or SIGTERM, then stops cleanly. A restart on the same data directory
    resumes where it stopped. Logins are checked by the platform (nats.conf's auth callout);
    the operator credential for `dante status` (and the other operator commands) is written
    to your config folder, for you only. With --nats-url, it uses that NATS server or cluster
    (comma-separated URLs) instead of starting one.
    """
    from dante.cli.common import shared

    nats_url = shared().nats_url
    processes = _process_count(processes)
    configure_logging()
    data_dir = data_dir or default_data_dir()
    # Its secrets.json controls the platform: a new data folder is its owner's only.
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    installation = InstallationSecrets.load_or_create(data_dir)
    server: NatsServer | None = None
    url = nats_url
    if url is None:
        server = _embedded_server(data_dir, port, monitor_port, installation)
        if server is None:
            return 1
        url = server.url
    try:
        nc, system = await _connect_platform(url, installation)
    except ConnectFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        if server is not None:
            server.stop()
        return exc.exit_code
    try:
        failed = await _serve(
            url, data_dir, installation, (nc, system), processes, replicas=replicas, demo=demo
        )
    finally:
        with anyio.CancelScope(shield=True):
            for client in (system, nc):
                try:
                    await client.drain()
                except Exception:  # already closed or the server went first
                    await client.close()
            if server is not None:
                server.stop()
    if failed is not None:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    return 0


def _process_count(asked: int | None) -> int:
    """--processes, checked: 1 or 2; by default 2 where there are 2 CPUs or more."""
    if asked is None:
        return 2 if (os.cpu_count() or 1) >= 2 else 1
    if asked not in (1, 2):
        raise UsageError(f"--processes is 1 or 2, not {asked}")
    return asked


async def _serve(
    url: str,
    data_dir: Path,
    installation: InstallationSecrets,
    connections: tuple[NATS, NATS],
    processes: int,
    *,
    replicas: int,
    demo: bool,
) -> str | None:
    """Run the platform on its connection and the system user's until stopped; why it could
    not start, if so."""
    from dante.cli.serve import PartsFailed, PartsProcess
    from dante.handlers.auth.service import Identity
    from dante.handlers.auth.sessions import Sessions
    from dante.handlers.platform import ALL_PARTS, Platform, PlatformOptions

    nc, system = connections

    child = (
        None
        if processes == 1
        else PartsProcess(
            url, data_dir, installation.platform_password, ["handlers", "views"], replicas=replicas
        )
    )
    options = PlatformOptions(
        data_dir=data_dir,
        log_settings=LogSettings(replicas=replicas),
        parts=ALL_PARTS if child is None else frozenset({"commands"}),
    )
    platform = Platform(nc, options)
    identity = Identity(
        nc,
        platform.store,
        installation.signer,
        operator_token=installation.operator_token,
        sessions=Sessions(system),
    )
    # Stopped first, while the platform still serves them (the demo agent gives jobs back).
    stopping: list[Callable[[], Awaitable[None]]] = []
    failed: str | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_signals, tg.cancel_scope, stopping)
            tg.start_soon(functools.partial(platform.run, extra=[identity.run]))
            with anyio.fail_after(READY_TIMEOUT_S):
                if child is not None:
                    # It reads the log into its world and views while this process starts.
                    await tg.start(child.run)
                await platform.ready.wait()
                await identity.ready.wait()
            # The world read from the log is most of the heap and lives as long as the
            # process: keep the cyclic collector from rescanning it (see dante.runtime).
            settle_heap()
            written = save_operator(url, installation.operator_token)
            print(f"Dante is up on {url} (data in {data_dir}). Ctrl-C stops it.", flush=True)
            print(f"operator credential for {url}: {written} (yours only)", flush=True)
            if demo:
                stopping.append((await _demo(tg, url, data_dir, identity)).stop)
            print("ready", flush=True)
    except* PartsFailed as group:
        failed = str(group.exceptions[0])
    return failed


async def _connect_platform(url: str, installation: InstallationSecrets) -> tuple[NATS, NATS]:
    """The platform's connection, and its system user's (which closes the connections of a
    revoked login)."""
    nc = await connect(
        url,
        name="dante-platform",
        forever=True,
        credential=platform_credential(installation.platform_password),
    )
    try:
        system = await connect(
            url,
            name="dante-system",
            forever=True,
            credential=system_credential(installation.system_password),
        )
    except BaseException:
        await nc.close()
        raise
    return nc, system


def _embedded_server(
    data_dir: Path, port: int, monitor_port: int, installation: InstallationSecrets
) -> NatsServer | None:
    """The nats-server `dante up` runs itself, started; None (said why) when it fails."""
    server = NatsServer(
        store_dir=data_dir / "nats",
        port=port,
        config=default_config(),
        monitor_port=monitor_port,
        env=installation.server_env(),
    )
    try:
        server.start()
    except NatsServerError as exc:
        print(f"error: the embedded nats-server did not start: {exc}", file=sys.stderr)
        print(f"hint: is port {port} taken (another `dante up`)? Try --port.", file=sys.stderr)
        return None
    return server


@dataclass(frozen=True, slots=True)
class DemoAccounts:
    renter: Credential
    provider: Credential


async def open_demo_accounts(identity: Identity) -> DemoAccounts:
    """The demo renter (DANTE_USERNAME/DANTE_PASSWORD, else demo-user/demo-pass) and the demo
    provider account, opened server-side so the demo works with logins enforced. Opening
    them again on a restart is a harmless repeat; the provider's password lives only in
    this process (the platform keeps its hash), so a new one is set on each start."""
    import secrets as random

    from dante.handlers.rejection import Rejected

    renter, password = os.environ.get(USERNAME_VAR), os.environ.get(PASSWORD_VAR)
    if not renter or not password:
        renter, password = DEMO_RENTER
    try:
        await identity.open_account(renter, password, "renter")
    except Rejected as rejected:
        # Someone's real account, or the demo's with another password: leave it as it is.
        print(f"demo renter {renter}: {rejected.info.message}", file=sys.stderr)
    provider_password = random.token_urlsafe(24)
    await identity.set_password(DEMO_PROVIDER, provider_password, "provider")
    return DemoAccounts(
        renter=Credential(username=renter, secret=password, role="renter"),
        provider=Credential(username=DEMO_PROVIDER, secret=provider_password, role="provider"),
    )


async def _demo(tg: anyio.abc.TaskGroup, url: str, data_dir: Path, identity: Identity) -> DemoAgent:
    """Open the demo accounts, fund the renter, start the provider's agent, say what next."""
    from dante.cli.demo import DemoAgent, fund, next_steps, wait_until_offered

    accounts = await open_demo_accounts(identity)
    funded = await fund(url, accounts.renter)
    agent = DemoAgent(url, data_dir, accounts.provider)
    await tg.start(agent.run)
    if funded and not await wait_until_offered(url, accounts.renter, DEMO_PROVIDER):
        print(
            f"the demo provider is not on the market yet; see {agent.log_path}",
            file=sys.stderr,
            flush=True,
        )
    default = (accounts.renter.username, accounts.renter.secret) == DEMO_RENTER
    print(next_steps(url, accounts.renter, default_password=default), flush=True)
    return agent
