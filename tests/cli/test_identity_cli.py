"""`dante up`, `dante status`, `dante account create`, `dante login` and `dante logout` as
real processes, against the platform with logins enforced."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from dante.client.connect import LoginRefused, connect
from dante.client.credentials import Credential

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@dataclass
class Up:
    url: str
    data_dir: Path
    config: Path
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def env(self, config: Path | None = None, **more: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DANTE_")}
        env.update(XDG_CONFIG_HOME=str(config or self.config), DANTE_NATS_URL=self.url, **more)
        return env

    async def dante(self, *args: str, config: Path | None = None, **env: str) -> tuple[int, str]:
        result = await anyio.run_process(
            [sys.executable, "-m", "dante", *args],
            env=self.env(config, **env),
            check=False,
            stdin=subprocess.DEVNULL,
        )
        return result.returncode, (result.stdout + result.stderr).decode()


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    port = _free_port()
    config = tmp_path / "config"
    started = Up(
        url=f"nats://127.0.0.1:{port}",
        data_dir=tmp_path / "data",
        config=config,
        process=None,  # type: ignore[arg-type]
    )
    started.process = subprocess.Popen(
        [sys.executable, "-m", "dante", "up", "--port", str(port), "--monitor-port", "-1"],
        env=started.env(DANTE_DATA_DIR=str(started.data_dir), LOG_LEVEL="warning"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert started.process.stdout is not None
    stdout = started.process.stdout

    def read() -> None:
        for line in stdout:
            started.lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while "ready\n" not in started.lines:
        assert started.process.poll() is None, "".join(started.lines)
        assert time.monotonic() < deadline, "".join(started.lines)
        time.sleep(0.05)
    try:
        yield started
    finally:
        started.process.send_signal(signal.SIGTERM)
        try:
            started.process.wait(30)
        except subprocess.TimeoutExpired:
            started.process.kill()
            started.process.wait()
        reader.join(5)
        stdout.close()


async def test_status_works_with_the_operator_credential_dante_up_wrote_and_not_without(
    up: Up, tmp_path: Path
) -> None:
    written = up.config / "dante" / "operator.json"
    assert mode(written) == 0o600 and mode(written.parent) == 0o700
    assert up.url in json.loads(written.read_text())["servers"]
    assert mode(up.data_dir / "secrets.json") == 0o600
    assert mode(up.data_dir / "nats.env") == 0o600

    code, out = await up.dante("status", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"] and len(report["services"]) == 1

    elsewhere = tmp_path / "elsewhere"
    code, out = await up.dante("status", config=elsewhere)
    assert code == 1, out
    assert "no operator credential" in out and "dante up" in out
    # A renter's login is no operator credential either.
    code, out = await up.dante(
        "status", config=elsewhere, DANTE_USERNAME="alice", DANTE_PASSWORD="alice-pass"
    )
    assert code == 1 and "no operator credential" in out


async def test_create_login_logout(up: Up, tmp_path: Path) -> None:
    bob = {"DANTE_USERNAME": "bob", "DANTE_PASSWORD": "bob-secret-pass"}
    code, out = await up.dante("account", "create", "--role", "provider", config=None, **bob)
    assert code == 0, out
    assert "account bob (provider) is open" in out
    code, out = await up.dante("account", "create", config=None, **bob)
    assert code == 1 and "taken" in out
    long_name = {"DANTE_USERNAME": "a" * 300, "DANTE_PASSWORD": "bob-secret-pass"}
    code, out = await up.dante("account", "create", config=None, **long_name)
    assert code == 1 and "an account name has 2 to 32 characters" in out, out
    assert "Expected" not in out

    # Logging in checks the password with the platform and keeps a token, never the password.
    home = tmp_path / "bob-config"
    code, out = await up.dante("login", config=home, **bob)
    assert code == 0, out
    stored = home / "dante" / "credentials.json"
    assert mode(stored) == 0o600 and mode(stored.parent) == 0o700
    text = stored.read_text()
    assert "bob-secret-pass" not in text
    login = json.loads(text)["servers"][up.url]
    assert login["username"] == "bob" and login["role"] == "provider"
    token = login["token"]
    nc = await connect(up.url, name="t", credential=Credential(username="bob", secret=token))
    await nc.close()

    # Wrong password and unknown user: the same answer.
    code, wrong = await up.dante(
        "login", config=home, DANTE_USERNAME="bob", DANTE_PASSWORD="nope-nope"
    )
    assert code == 1
    code, unknown = await up.dante(
        "login", config=home, DANTE_USERNAME="nobody", DANTE_PASSWORD="nope-nope"
    )
    assert code == 1
    assert wrong.replace("'bob'", "USER") == unknown.replace("'nobody'", "USER")

    code, out = await up.dante("logout", config=home)
    assert code == 0 and "logged out bob" in out, out
    assert up.url not in json.loads(stored.read_text())["servers"]
    with pytest.raises(LoginRefused):  # revoked on the platform too
        await connect(up.url, name="t", credential=Credential(username="bob", secret=token))
    code, out = await up.dante("logout", config=home)
    assert code == 0 and "not logged in" in out
