"""`dante up` as a real child process, for CLI tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

#: The variables that name a NATS server: `dante up` would use the one they name instead of
#: starting its own, so a developer's are not passed on (tests set them where they mean to).
URL_VARS = ("DANTE_NATS_URL", "NATS_ADDRESS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without `URL_VARS`, plus `env`."""
    return {**{k: v for k, v in os.environ.items() if k not in URL_VARS}, **(env or {})}


class UpProcess:
    """`dante up --port PORT --monitor-port -1` (`monitor_port`: another, None: none given).

    With `nats_url`, the server it is told of in `env` ($DANTE_NATS_URL or $NATS_ADDRESS):
    then without --port and --monitor-port, so that it uses that server.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *args: str,
        env: dict[str, str] | None = None,
        monitor_port: int | None = -1,
        nats_url: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.args = args
        # Its operator credential goes to a config folder of the test's, not the user's.
        self.env = environment({"XDG_CONFIG_HOME": str(data_dir.parent / "config"), **(env or {})})
        self.monitor_port = monitor_port
        self.nats_url = nats_url
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    @property
    def url(self) -> str:
        return self.nats_url or f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        options = ["--data-dir", str(self.data_dir)]
        if self.nats_url is None:
            options += ["--port", str(self.port)]
            if self.monitor_port is not None:
                options += ["--monitor-port", str(self.monitor_port)]
        return [sys.executable, "-m", "dante", "up", *options, *self.args]

    def start(self, timeout: float = 60) -> UpProcess:
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if line.strip() == "ready":
                return self
        self.stop()
        raise AssertionError("dante up did not become ready:\n" + "".join(self.output))

    def dante(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run a `dante` command as the user who started this platform."""
        return dante(*args, env={**self.env, "DANTE_NATS_URL": self.url, **env}, clean=True)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        self.output.append(out or "")
        return self.process.returncode


def dante(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    stdin: str | None = None,
    clean: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run `dante …`; with `clean`, `env` is the whole environment, else it adds to ours."""
    return subprocess.run(
        [sys.executable, "-m", "dante", *args],
        capture_output=True,
        text=True,
        env=(env or {}) if clean else {**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
        input=stdin,
    )
