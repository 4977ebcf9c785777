"""`dante up` as a real child process, for CLI tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class UpProcess:
    def __init__(
        self, data_dir: Path, port: int | None = None, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> UpProcess:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dante",
                "up",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                "--monitor-port",
                "-1",
                *self.args,
            ],
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
