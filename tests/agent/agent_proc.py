"""`dante agent run` and `dante up` as real child processes whose output is read as it comes
(a child writing logs into a pipe nobody reads would block once the pipe is full)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.agent.daemon_helpers import SIMULATE
from tests.cli.platform_proc import UpProcess
from tests.factories import SOLANA

REPO = Path(__file__).resolve().parents[2]
#: Accounts the end-to-end tests open on the platform.
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-1"}
ROLES = {"alice": "renter", "bob": "provider"}


class _Reader:
    """Collects a child's output lines in a thread; `wait_for` a line containing a text."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        assert process.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append("")  # end of output
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float, start: int = 0, *, exact: bool = False) -> int:
        """The index of the first line from `start` on containing `text` (or being it)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for index in range(start, len(self.lines)):
                    line = self.lines[index]
                    if (line.strip() == text) if exact else (text in line):
                        return index
                if (self.lines and self.lines[-1] == "") or time.monotonic() > deadline:
                    raise AssertionError(f"never saw {text!r}:\n{self.text}")
                self._changed.wait(0.2)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def join(self) -> None:
        self._thread.join(timeout=10)


class AgentProcess:
    def __init__(self, url: str, work_dir: Path, *args: str, env: dict[str, str] | None = None):
        self.url = url
        self.work_dir = work_dir
        self.args = args
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DANTE_")},
            "DANTE_USERNAME": "bob",
            "DANTE_PASSWORD": PASSWORDS["bob"],
            "SOLANA_WALLET_ADDRESS": SOLANA,
            "XDG_CONFIG_HOME": str(work_dir.parent / "config"),
            "PYTHONPATH": str(REPO),
            **(env or {}),
        }
        self.process: subprocess.Popen[str] | None = None
        self.reader: _Reader | None = None

    def start(self, timeout: float = 60, *, until: str = '"agent ready"') -> AgentProcess:
        """Start it and wait for a line containing `until` (by default: ready to serve)."""
        simulate = () if "--simulate" in self.args else ("--simulate", SIMULATE)
        executor = () if "--executor" in self.args else ("--executor", "script")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "dante", "agent", "run", *simulate, *executor,
                "--work-dir", str(self.work_dir), "--nats-url", self.url,
                "--tick-seconds", "1", *self.args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            cwd=self.work_dir.parent,
        )  # fmt: skip
        self.reader = _Reader(self.process)
        self.reader.wait_for(until, timeout)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def output(self) -> str:
        return self.reader.text if self.reader else ""

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
        return kb / 1024

    def kill(self) -> None:
        """kill -9: no cleanup, no goodbye."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        assert self.reader is not None
        self.reader.join()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the agent did not stop:\n{self.output}") from None
        finally:
            assert self.reader is not None
            self.reader.join()
            if self.process.stdout is not None:
                self.process.stdout.close()
        return code


class Platform(UpProcess):
    """`dante up` whose output keeps being read after it is ready, with the accounts of
    `PASSWORDS` open (the first time)."""

    def __init__(
        self, data_dir: Path, port: int | None = None, *, nats_url: str | None = None
    ) -> None:
        """With `nats_url`: on that server (started with the installation's `server_env`,
        see `InstallationSecrets`), which it neither starts nor stops."""
        super().__init__(
            data_dir,
            port,
            env={"XDG_CONFIG_HOME": str(data_dir.parent / "config")},
            nats_url=nats_url,
        )
        self.env = {k: v for k, v in self.env.items() if not k.startswith("DANTE_")}
        if nats_url is not None:
            self.env["DANTE_NATS_URL"] = nats_url

    def open_accounts(self) -> Platform:
        for name, password in PASSWORDS.items():
            result = self.dante(
                "account", "create", "--role", ROLES[name], "--no-login",
                DANTE_USERNAME=name, DANTE_PASSWORD=password,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
        return self

    @property
    def platform_password(self) -> str:
        from dante.services.auth.installation import InstallationSecrets

        return InstallationSecrets.load_or_create(self.data_dir).platform_password

    def start(self, timeout: float = 60) -> Platform:
        self.process = subprocess.Popen(
            self.command(),  # --port P --monitor-port -1, or none with a nats_url
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        self.reader = _Reader(self.process)
        self.reader.wait_for("ready", timeout, exact=True)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.reader.join()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code
