"""`dante serve`: parts of the platform in a process of their own.

The platform's parts (`dante.platform`: the commands, the handlers, the views)
share nothing but the log and the views' file, so `dante up` runs the handlers and the views
in a child process (`dante serve handlers views`, managed by `PartsProcess`) while it answers
the commands itself: the platform uses two cores instead of one. An operator can also run
`dante serve handlers --nats-url …` on another machine of a cluster: each handler's durable
consumer shares its work between every process that runs it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import anyio
from cyclopts import Parameter

from dante.chain import ChainError
from dante.cli.chainopts import ChainOptions
from dante.cli.lifecycle import stop_child
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
from dante.cli.tuning import Tuning
from dante.client.connect import ConnectFailed, connect
from dante.client.credentials import platform_credential
from dante.collector import settle_heap
from dante.platform import Part
from dante.services.auth.installation import (
    PLATFORM_PASSWORD_VAR,
    SECRETS_FILE,
    InstallationSecrets,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anyio.abc import ByteReceiveStream, Process, TaskStatus
    from nats.aio.client import Client as NATS

    from dante.domain.settings import Settings
    from dante.events.streams import LogSettings
    from dante.platform import Platform, PlatformOptions

#: What the child writes on its standard output once its parts run.
READY_LINE: Final = "ready"
#: How long a stopping child may take to finish the decisions it has started.
_STOP_S: Final = 10.0
#: Restart delays of a child that died, doubling up to the last.
_RESTART_S: Final = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
#: A child that ran this long before it stopped had been working: its restart starts the
#: delays over.
_HEALTHY_S: Final = 60.0


def platform_password(data_dir: Path) -> str | None:
    """The platform user's password: $DANTE_PLATFORM_PASSWORD, else the installation's
    secrets.json in `data_dir`; None when neither has it."""
    explicit = os.environ.get(PLATFORM_PASSWORD_VAR)
    if explicit:
        return explicit
    if not (data_dir / SECRETS_FILE).exists():
        return None
    return InstallationSecrets.load_or_create(data_dir).platform_password


async def serve(
    *parts: Part,
    data_dir: Annotated[
        Path | None,
        Parameter(help="The installation's data folder: its secrets.json and the views' file."),
    ] = None,
    replicas: Annotated[int, Parameter(help="Stream replicas (3 on a three-node cluster).")] = 1,
    parent_pipe: Annotated[bool, Parameter(show=False)] = False,
    limits: Limits | None = None,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = DEFAULT_HOST,
    tuning: Tuning | None = None,
    settlement: ChainOptions | None = None,
) -> int:
    """Run parts of the platform in this process: commands, handlers, views (default: all).

    `dante up` runs the handlers and the views in one of these. Run more against a cluster
    (--nats-url) to share the work: the command service is a queue group, and each handler's
    durable consumer spreads its triggers over every process that runs it. The views write
    views.sqlite3 in --data-dir, where the commands' queries read it. Logins are answered by
    `dante up` only. The platform's password comes from $DANTE_PLATFORM_PASSWORD, else from
    the secrets.json of --data-dir (by default the folder `dante up` uses). Without --config
    or a setting's option it runs with the settings in force in the log; with them, it
    records them there when they differ (as `dante up` does). The commands settle dGPU on the
    local chain in --data-dir, which only one process may hold (`dante up`'s), or on the
    Solana cluster of --solana-rpc, as `dante up` was told. Runs until Ctrl-C or SIGTERM.
    """
    from dante.cli.lifecycle import default_data_dir, private_data_dir, stop_on_signals
    from dante.cli.options import nats_url
    from dante.events.streams import LogSettings
    from dante.platform import ALL_PARTS, PlatformOptions

    check_port(metrics_port)
    chain = (settlement or ChainOptions()).for_parts(parts)
    tuning = tuning or Tuning()
    base = (limits or Limits()).settings()
    tuned = tuning.settings(base) if tuning.given() else None
    configure_logging()
    data_dir = private_data_dir(data_dir or default_data_dir())
    password = platform_password(data_dir)
    if password is None:
        print(
            f"error: no platform password: set ${PLATFORM_PASSWORD_VAR} or point --data-dir at "
            f"the folder with the installation's {SECRETS_FILE} (none in {data_dir})",
            file=sys.stderr,
        )
        return 2
    url = nats_url()
    try:
        nc = await connect(
            url, name="dante-serve", forever=True, credential=platform_credential(password)
        )
    except ConnectFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    log_settings = LogSettings(replicas=replicas)
    options = PlatformOptions(
        data_dir=data_dir,
        log_settings=log_settings,
        parts=frozenset(parts) or ALL_PARTS,
        metrics=metrics_port is not None,
        settings=await _settings(nc, log_settings, base, tuned, tuning.source("dante serve")),
        chain=chain,
    )
    platform = await _platform(nc, options)
    if platform is None:
        return 1
    exits = contextlib.ExitStack()
    code = 0
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_signals, tg.cancel_scope, [], "dante serve")
            if parent_pipe:
                tg.start_soon(_stop_when_parent_goes, tg.cancel_scope)
            tg.start_soon(platform.run)
            await platform.ready.wait()
            # The world is most of the heap and lives as long as the process (dante.collector).
            settle_heap()
            if metrics_port is not None:
                exits.enter_context(
                    serving(platform.metrics_registry(), metrics_host, metrics_port, "serve")
                )
            print(READY_LINE, flush=True)
    except* MetricsUnavailable as group:
        print(f"error: {group.exceptions[0]}", file=sys.stderr)
        code = 1
    finally:
        exits.close()
        with anyio.CancelScope(shield=True):
            try:
                await nc.drain()
            except Exception:  # already closed, or the server went first
                await nc.close()
    return code


async def _platform(nc: NATS, options: PlatformOptions) -> Platform | None:
    """The platform's parts, or None (said why) when the local chain is another process's."""
    from dante.platform import Platform

    try:
        return Platform(nc, options)
    except ChainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        await nc.close()
        return None


async def _settings(
    nc: NATS, log_settings: LogSettings, base: Settings, given: Settings | None, source: str
) -> Settings:
    """The settings to run with: those given, recorded in the log when they change the
    rules; else `base` (the limits) with the rules in force."""
    from dante.events.store import EventStore
    from dante.events.streams import ensure_log
    from dante.services.settings import record_settings, settings_in_force

    await ensure_log(nc.jetstream(), log_settings)
    store = EventStore(nc)
    if given is None:
        in_force, _ = await settings_in_force(store, base)
        return in_force
    await record_settings(store, given, source)
    return given


async def _stop_when_parent_goes(scope: anyio.CancelScope) -> None:
    """Stop once standard input ends: the parent (`dante up`) closed it, or died."""
    # Read without a thread: a thread blocked on the pipe would hold the exit up.
    fd = sys.stdin.fileno()
    while True:
        await anyio.wait_readable(fd)
        try:
            if not os.read(fd, 4096):
                break
        except BlockingIOError:
            continue
    print("dante serve: the parent process is gone; stopping", file=sys.stderr, flush=True)
    scope.cancel()


class PartsFailed(Exception):
    """The child process could not start."""


class PartsProcess:
    """`dante serve PARTS…` as `dante up`'s child: started, watched, restarted, stopped.

    The child logs to the same standard error as `dante up`. Its standard input is a pipe
    that only `dante up` holds: when `dante up` goes, however it goes, the child reads the
    end of it and stops, so it never outlives the platform it belongs to.
    """

    def __init__(
        self,
        url: str,
        data_dir: Path,
        password: str,
        parts: list[Part],
        *,
        replicas: int = 1,
        options: list[str] | None = None,
    ) -> None:
        self.url = url
        #: More options for the child (the limits `dante up` was given).
        self._options = options or []
        self.parts = parts
        self.data_dir = data_dir
        self._password = password
        self._replicas = replicas
        self._process: Process | None = None
        self._stopping = False
        #: Set each time a child says it is ready.
        self.ready = anyio.Event()

    def _argv(self) -> list[str]:
        return [
            sys.executable, "-m", "dante", "--nats-url", self.url,
            "serve", *self.parts, "--data-dir", str(self.data_dir),
            "--replicas", str(self._replicas), "--parent-pipe", *self._options,
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        # The password travels in the environment (never on a command line `ps` shows).
        return {**os.environ, PLATFORM_PASSWORD_VAR: self._password}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the child, report started once it is ready, restart it whenever it dies;
        stop it when cancelled. Raises `PartsFailed` when the first child exits before it is
        ready (its error is on standard error): nothing a restart would mend."""
        started = False
        failures = 0
        try:
            while True:
                began = anyio.current_time()
                code = await self._run_once(task_status if not started else None)
                if self._stopping:
                    return
                if not started and not self.ready.is_set():
                    raise PartsFailed(
                        f"`dante serve {' '.join(self.parts)}` exited with code {code}"
                    )
                started = True
                if anyio.current_time() - began >= _HEALTHY_S:
                    failures = 0  # it ran well: this is a new failure, not the same one again
                delay = _RESTART_S[min(failures, len(_RESTART_S) - 1)]
                failures += 1
                print(
                    f"dante up: `dante serve {' '.join(self.parts)}` stopped (exit code {code}); "
                    f"restarting it in {delay:.0f}s",
                    file=sys.stderr,
                    flush=True,
                )
                await anyio.sleep(delay)
        finally:
            with anyio.CancelScope(shield=True):
                await self.stop()

    async def _run_once(self, task_status: TaskStatus[None] | None) -> int:
        self.ready = anyio.Event()
        process = await anyio.open_process(
            self._argv(),
            stdin=-1,  # subprocess.PIPE: ours alone, see the class's docstring
            stdout=-1,
            stderr=None,
            env=self._env(),
            start_new_session=True,  # Ctrl-C reaches `dante up`, which stops it
        )
        self._process = process
        assert process.stdout is not None
        async for line in _lines(process.stdout):
            if line == READY_LINE and not self.ready.is_set():
                self.ready.set()
                if task_status is not None:
                    task_status.started()
            else:
                print(line, flush=True)
        code = await process.wait()
        if process.stdin is not None:
            await process.stdin.aclose()
        return code

    async def stop(self) -> None:
        """Ask the child to stop (SIGTERM), then insist."""
        self._stopping = True
        process = self._process
        if process is None:
            return
        await stop_child(process, _STOP_S)
        if process.stdin is not None:
            await process.stdin.aclose()


async def _lines(stream: ByteReceiveStream) -> AsyncIterator[str]:
    buffered = b""
    async for data in stream:
        buffered += data
        *lines, buffered = buffered.split(b"\n")
        for line in lines:
            yield line.decode(errors="replace").rstrip("\r")
    if buffered:
        yield buffered.decode(errors="replace")
