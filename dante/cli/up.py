"""`dante up`: the whole platform with one command, on an embedded nats-server or a cluster."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import anyio
from cyclopts import Parameter

from dante import __version__
from dante.cli.chainopts import ChainOptions
from dante.cli.lifecycle import default_data_dir, private_data_dir, stop_on_signals
from dante.cli.limits import Limits
from dante.cli.logs import configure_logging
from dante.cli.metrics import (
    DEFAULT_HOST,
    MetricsHost,
    MetricsPort,
    MetricsUnavailable,
    check_port,
    serving,
)
from dante.cli.options import URL_ENV, UsageError
from dante.cli.tuning import Tuning
from dante.client.connect import ConnectFailed, connect, elsewhere_first, resolve_url
from dante.client.credentials import (
    PASSWORD_VAR,
    USERNAME_VAR,
    Credential,
    platform_credential,
    save_operator,
    system_credential,
)
from dante.collector import settle_heap
from dante.domain.settings import Settings
from dante.events.natsd import ListenFailed, NatsServer, NatsServerError, default_config
from dante.events.streams import LogSettings
from dante.services.auth.installation import InstallationSecrets
from dante.services.auth.limits import LimitError, check_settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.client import Client as NATS

    from dante.chain import Chain
    from dante.cli.demo import DemoAgent
    from dante.platform import Platform
    from dante.services.auth.service import Identity

DEMO_RENTER: Final = ("demo-user", "demo-pass")
DEMO_PROVIDER: Final = "demo-provider"

#: The embedded nats-server's client port: nats-server's own default.
DEFAULT_PORT: Final = 4222
#: The other variable `resolve_url` reads after $DANTE_NATS_URL (`URL_ENV`).
ADDRESS_ENV: Final = "NATS_ADDRESS"
#: The micro service a `dante up` with an embedded nats-server answers `$SRV.PING` as, its
#: metadata saying where that server is and its monitoring: for `dante status`.
UP_SERVICE: Final = "dante-up"


#: The platform folds its whole log into memory before it serves: over a minute per million
#: events on a 2-core machine (bench/memory.py). This only catches a start that hangs.
READY_TIMEOUT_S: Final = 3600


async def up(
    *,
    data_dir: Annotated[Path | None, Parameter(help="Where the log and the views live.")] = None,
    port: Annotated[
        int | None,
        Parameter(
            help="Port of the nats-server `dante up` starts unless --nats-url, $DANTE_NATS_URL "
            "or $NATS_ADDRESS names one to use (-1: any free one). Default: 4222. Given (or "
            "--monitor-port), it starts one even where a variable names a server."
        ),
    ] = None,
    monitor_port: Annotated[
        int | None,
        Parameter(
            help="Turn on its HTTP monitoring (/varz, /jsz, /connz) on this port of "
            "127.0.0.1 (-1: any free one); `dante status` shows it. Off by default: it has no "
            "login, and /connz names every connection's account and machine to any user of "
            "this machine."
        ),
    ] = None,
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
    limits: Limits | None = None,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = DEFAULT_HOST,
    tuning: Tuning | None = None,
    settlement: ChainOptions | None = None,
    chain_rpc_port: Annotated[
        int | None,
        Parameter(
            help="Also serve the local chain over Solana JSON-RPC on this localhost port "
            "(8899 like solana-test-validator; -1: any free one)."
        ),
    ] = None,
) -> int:
    """Start the platform: the event log, the command service, the handlers and the views.

    Runs until Ctrl-C or SIGTERM, then stops cleanly. A restart on the same data directory
    resumes where it stopped. Logins are checked by the platform (nats.conf's auth callout);
    the operator credential for `dante status` (and the other operator commands) is written
    to your config folder, for you only. With --nats-url (else $DANTE_NATS_URL, else
    $NATS_ADDRESS), it uses that NATS server or cluster (comma-separated URLs), started with
    the installation's nats.env, instead of starting one; --port or --monitor-port starts one
    even where a variable names a server. The platform's settings are the defaults, the
    --config file's and the options'; they are recorded in the log when they differ from
    those in force.
    """
    from dante.cli.options import shared

    explicit = shared().nats_url
    embedding = port is not None or monitor_port is not None
    if explicit is not None and embedding:
        raise UsageError(
            "--port and --monitor-port are for the embedded nats-server; with --nats-url "
            "`dante up` starts none"
        )
    nats_url = None if embedding else _given_url(explicit)
    processes = _process_count(processes)
    _check_limits()
    check_port(metrics_port)
    tuning = tuning or Tuning()
    settings = tuning.settings((limits or Limits()).settings())
    chain = (settlement or ChainOptions()).cluster(rpc_port=chain_rpc_port)
    configure_logging()
    data_dir = private_data_dir(data_dir or default_data_dir())
    installation = InstallationSecrets.load_or_create(data_dir)
    server: NatsServer | None = None
    url = nats_url
    if url is None:
        server = _embedded_server(
            data_dir, DEFAULT_PORT if port is None else port, monitor_port, installation
        )
        if server is None:
            return 1
        url = server.url
    else:
        print(
            f"using the NATS server at {url} (from --nats-url, $DANTE_NATS_URL or "
            "$NATS_ADDRESS) instead of starting one",
            flush=True,
        )
    try:
        nc, system, spare = await _connect_platform(url, installation)
    except ConnectFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        if server is not None:
            server.stop()
        return exc.exit_code
    try:
        failed = await _serve(
            url,
            data_dir,
            installation,
            (nc, system, spare),
            processes,
            replicas=replicas,
            demo=demo,
            server=server,
            metrics=None if metrics_port is None else (metrics_host, metrics_port),
            settings=(settings, tuning.source("dante up")),
            child_options=(limits or Limits()).argv(),
            chain=chain,
            chain_rpc_port=chain_rpc_port,
        )
    finally:
        with anyio.CancelScope(shield=True):
            await _drain(spare, system, nc)
            if server is not None:
                server.stop()
    if failed is not None:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    return 0


def _given_url(explicit: str | None) -> str | None:
    """The NATS server `dante up` uses instead of starting one, as every command finds the
    platform (`resolve_url`: --nats-url, else $DANTE_NATS_URL, else $NATS_ADDRESS); None
    where none of them is set."""
    if explicit or os.environ.get(URL_ENV) or os.environ.get(ADDRESS_ENV):
        return resolve_url(explicit)
    return None


def _check_limits() -> None:
    """The operator's `DANTE_LOGIN_…`, `DANTE_CLIENT_…` and `DANTE_SCRYPT_LOG2_N` settings
    are usable (see dante/services/auth/limits.py), before anything starts."""
    try:
        check_settings()
    except LimitError as exc:
        raise UsageError(str(exc)) from None


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
    connections: tuple[NATS, NATS, NATS | None],
    processes: int,
    *,
    replicas: int,
    demo: bool,
    server: NatsServer | None = None,
    metrics: tuple[str, int] | None = None,
    settings: tuple[Settings, str] | None = None,
    child_options: list[str] | None = None,
    chain: Chain | None = None,
    chain_rpc_port: int | None = None,
) -> str | None:
    """Run the platform on its connection and the system user's until stopped; why it could
    not start, if so. `server`: the embedded nats-server, if any, restarted whenever it
    dies (the connections reconnect to it by themselves). `metrics`: where to serve its
    Prometheus metrics (host, port). `settings`: the platform's, and where they came from;
    recorded in the log when they differ from those in force, before anything decides (its
    child runs with those in force)."""
    from dante.services.settings import record_settings

    tuned, source = settings or (Settings(), "dante up")
    from dante.chain import ChainError
    from dante.cli.serve import PartsFailed, PartsProcess
    from dante.platform import ALL_PARTS, Platform, PlatformOptions
    from dante.services.auth.limits import ClientLimits, LoginLimits
    from dante.services.auth.service import Identity
    from dante.services.auth.sessions import Sessions

    nc, system, spare = connections
    child = (
        None
        if processes == 1
        else PartsProcess(
            url,
            data_dir,
            installation.platform_password,
            ["handlers", "views"],
            replicas=replicas,
            options=child_options,
        )
    )
    options = PlatformOptions(
        data_dir=data_dir,
        log_settings=LogSettings(replicas=replicas),
        parts=ALL_PARTS if child is None else frozenset({"commands"}),
        metrics=metrics is not None,
        settings=tuned,
        chain=chain,
    )
    try:
        platform = Platform(nc, options)
    except ChainError as exc:  # the local chain held by another process
        return str(exc)
    await record_settings(platform.store, tuned, source, options.log_settings)
    identity = Identity(
        nc,
        platform.store,
        installation.signer,
        operator_token=installation.operator_token,
        sessions=Sessions(system),
        login_limits=LoginLimits.from_env(),
        client_limits=ClientLimits.from_env(),
        spare=spare,
    )
    # Stopped first, while the platform still serves them (the demo agent gives jobs back).
    stopping: list[Callable[[], Awaitable[None]]] = []
    failed: str | None = None
    # What ends with the platform: its metrics' HTTP server.
    exits = contextlib.ExitStack()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_signals, tg.cancel_scope, stopping)
            if server is not None:
                tg.start_soon(server.supervise)
            tg.start_soon(functools.partial(platform.run, extra=[identity.run]))
            if chain_rpc_port is not None:
                await _serve_chain(tg, platform, chain_rpc_port)
            with anyio.fail_after(READY_TIMEOUT_S):
                if child is not None:
                    # It reads the log into its world and views while this process starts.
                    await tg.start(child.run)
                await platform.ready.wait()
                await identity.ready.wait()
            # The world read from the log is most of the heap and lives as long as the
            # process: keep the cyclic collector from rescanning it (see dante.collector).
            settle_heap()
            await _say_up(nc, url, data_dir, installation, server)
            if metrics is not None:
                exits.enter_context(serving(platform.metrics_registry(), *metrics, "platform"))
            if demo:
                stopping.append((await _demo(tg, url, data_dir, identity)).stop)
            print("ready", flush=True)
    except* PartsFailed as group:
        failed = str(group.exceptions[0])
    except* MetricsUnavailable as group:
        failed = str(group.exceptions[0])
    finally:
        exits.close()
    return failed


async def _say_up(
    nc: NATS,
    url: str,
    data_dir: Path,
    installation: InstallationSecrets,
    server: NatsServer | None,
) -> None:
    """Once ready: the operator's credential written, the embedded server announced (for
    `dante status`), and where everything is, said."""
    monitor = None if server is None else server.monitor_url
    written = save_operator(url, installation.operator_token)
    if server is not None:
        await _announce(nc, url, monitor)
    print(f"Dante is up on {url} (data in {data_dir}). Ctrl-C stops it.", flush=True)
    if monitor is not None:
        print(f"nats-server monitoring: {monitor}", flush=True)
    print(f"operator credential for {url}: {written} (yours only)", flush=True)


async def _serve_chain(tg: anyio.abc.TaskGroup, platform: Platform, port: int) -> None:
    from dante.chain.local import LocalChain
    from dante.chain.rpc_server import RpcServer

    assert isinstance(platform.chain, LocalChain)
    server = RpcServer(platform.chain, port=0 if port == -1 else port)
    try:
        await server.start()
    except OSError as exc:
        raise UsageError(f"--chain-rpc-port {port}: {exc.strerror}") from None
    print(f"local chain JSON-RPC: {server.url}", flush=True)
    tg.start_soon(server.serve)


async def _announce(nc: NATS, url: str, monitor: str | None) -> None:
    """Answer `$SRV.PING.dante-up` (and INFO, STATS) with where the embedded nats-server
    and its monitoring are (no `monitor`: it is off), for `dante status`; it stops
    answering when `nc` drains."""
    from nats.micro import add_service
    from nats.micro.service import ServiceConfig

    await add_service(
        nc,
        config=ServiceConfig(
            name=UP_SERVICE,
            version=__version__,
            description="`dante up` and its embedded nats-server",
            metadata={"nats": url} if monitor is None else {"nats": url, "monitor": monitor},
        ),
    )


async def _drain(*clients: NATS | None) -> None:
    for client in clients:
        if client is None:
            continue
        try:
            await client.drain()
        except Exception:  # already closed or the server went first
            await client.close()


async def _connect_platform(
    url: str, installation: InstallationSecrets
) -> tuple[NATS, NATS, NATS | None]:
    """The platform's connection, its system user's (which closes the connections of a
    revoked login), and on a cluster a spare for the auth callout on another node than the
    platform's (`Identity`'s `spare`)."""
    opened: list[NATS] = []

    async def open_one(where: str, name: str, credential: Credential, **options: Any) -> NATS:
        client = await connect(where, name=name, forever=True, credential=credential, **options)
        opened.append(client)
        return client

    platform = platform_credential(installation.platform_password)
    try:
        nc = await open_one(url, "dante-platform", platform)
        system = await open_one(
            url, "dante-system", system_credential(installation.system_password)
        )
        elsewhere = elsewhere_first(url, nc.connected_url)
        spare = None
        if elsewhere is not None:
            spare = await open_one(elsewhere, "dante-callout", platform, dont_randomize=True)
    except BaseException:
        for client in opened:
            await client.close()
        raise
    return nc, system, spare


def _embedded_server(
    data_dir: Path, port: int, monitor_port: int | None, installation: InstallationSecrets
) -> NatsServer | None:
    """The nats-server `dante up` runs itself, started (`monitor_port` None: without HTTP
    monitoring); None (said why) when it fails: which port, when it could not listen on
    one."""
    server = NatsServer(
        store_dir=data_dir / "nats",
        port=port,
        config=default_config(),
        monitor_port=monitor_port,
        env=installation.server_env(),
        say=_say,
    )
    try:
        server.start()
    except ListenFailed as exc:
        print(f"error: the embedded nats-server did not start: {exc}", file=sys.stderr)
        option = "--port" if exc.listener == "client" else "--monitor-port"
        taken = f"port {exc.port} is taken (another `dante up`?); " if exc.in_use else ""
        print(f"hint: {taken}try another {option} (-1: any free one)", file=sys.stderr)
        return None
    except NatsServerError as exc:
        print(f"error: the embedded nats-server did not start: {exc}", file=sys.stderr)
        return None
    return server


def _say(line: str) -> None:
    print(f"dante up: {line}", file=sys.stderr, flush=True)


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

    from dante.domain.rejection import Rejected

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
    funded = await fund(url, accounts.renter, data_dir)
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
