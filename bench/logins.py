"""Logins under attack: how long a legitimate login takes while one address guesses or sprays.

`dante up` runs in its own process with its embedded nats-server and the shipped nats.conf,
and hashes passwords at the real cost (scrypt N = 2^17, unless `$DANTE_SCRYPT_LOG2_N` says
otherwise). Every login is a bare NATS CONNECT with a password or a token
(tests/auth/attack.py), from an address of its own on loopback (any 127.x.y.z is this
machine), so the platform sees who is who:

- baseline: bob's right password from 127.0.0.2, one login at a time, nothing else going on;
  and his agent's login token (`bob/prv-1`);
- guessing: two loops of wrong passwords for bob from 127.0.0.66, as fast as the server
  answers; meanwhile bob's right password from 127.0.0.2, and his agent's token from the
  guesser's own address;
- spray: 80 parallel logins with random names from 127.0.0.77; meanwhile alice's right
  password from 127.0.0.3.

Each legitimate login's latency is reported (p50, p90, max) against the baseline's, with
how many were refused (must be none), and what the attackers managed (attempts per second,
logins let in: none).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bench.report import Report, children, cpu_seconds, percentile
from dante.client.accounts import issue_token, new_nonce, sign_up
from dante.client.connect import connect
from dante.client.credentials import Credential, signup_credential
from tests.auth.attack import Tally, hammer, raw_login

if TYPE_CHECKING:
    from bench.options import Options

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


async def _up(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    log = (data_dir / "dante-up.log").open("wb")
    process = subprocess.Popen(  # noqa: ASYNC220 (a child that outlives the loop)
        [
            sys.executable,
            *("-m", "dante", "up", "--processes", "1"),
            *("--data-dir", str(data_dir / "data"), "--port", str(port)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "LOG_LEVEL": "warning",
            "XDG_CONFIG_HOME": str(data_dir / "config"),
        },
    )
    log.close()
    for _ in range(1200):
        if process.poll() is not None:
            raise RuntimeError((data_dir / "dante-up.log").read_text()[-4000:])
        if b"\nready" in b"\n" + (data_dir / "dante-up.log").read_bytes():
            return process
        await asyncio.sleep(0.1)
    process.kill()
    raise RuntimeError("dante up did not become ready")


class _Attacker:
    """An attack loop (`tests.auth.attack.hammer`) in a process of its own, as a hostile
    client would be: its connections cost the bench's own loop nothing."""

    def __init__(self, port: int, source: str, user: str, password: str, parallel: int) -> None:
        self._args = [str(port), source, user, password, str(parallel)]
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.logins", *self._args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def stop(self) -> Tally:
        """Stop it (close its standard input); what it did."""
        assert self.process is not None
        out, _ = self.process.communicate("", timeout=60)
        found = json.loads(out)
        return Tally(tries=found["tries"], let_in=found["let_in"], refused=found["refused"])


async def _attack(port: int, source: str, user: str, password: str, parallel: int) -> None:
    """The attacker process: attack until standard input closes, then print the tally."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def readable() -> None:
        if not sys.stdin.read():
            stop.set()

    loop.add_reader(sys.stdin.fileno(), readable)
    users: list[str] | str = user
    if user == "*":
        users = [f"x{secrets.token_hex(6)}" for _ in range(500_000)]
    tally = await hammer(HOST, port, users, password, source=source, until=stop, parallel=parallel)
    print(json.dumps({"tries": tally.tries, "let_in": tally.let_in, "refused": tally.refused}))


async def _legitimate(
    port: int, logins: list[tuple[str, str, str]], seconds: float
) -> tuple[list[float], int]:
    """(user, secret, source) logins in turn for `seconds`: their latencies, and refusals."""
    times: list[float] = []
    refused = 0
    until = time.monotonic() + seconds
    n = 0
    while time.monotonic() < until:
        user, secret, source = logins[n % len(logins)]
        n += 1
        started = time.monotonic()
        ok = await raw_login(HOST, port, user, secret, source=source)
        times.append(time.monotonic() - started)
        refused += not ok
    return times, refused


def _nats_server(up: subprocess.Popen[bytes]) -> int:
    """The pid of the nats-server `dante up` runs."""
    for pid in children(up.pid):
        with contextlib.suppress(OSError):
            if b"nats-server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    raise RuntimeError("dante up runs no nats-server")


class _Cpu:
    """CPU time of the platform, its nats-server and the attacker over one phase."""

    def __init__(self, up: subprocess.Popen[bytes], server: int) -> None:
        self._pids = {"platform": up.pid, "nats-server": server}
        self._start = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        self._began = time.monotonic()

    def report(self, report: Report, phase: str, attacker_cpu: float) -> None:
        took = time.monotonic() - self._began
        for name, pid in self._pids.items():
            used = (cpu_seconds(pid) - self._start[name]) / took
            report.add(f"{name} CPU while {phase}", used, "cores")
        report.add(f"attacker CPU while {phase}", attacker_cpu / took, "cores")


def _latencies(
    report: Report, name: str, times: list[float], refused: int, vs: str | None = None
) -> None:
    report.add(f"{name} p50", percentile(times, 50) * 1000, "ms", vs=vs and f"{vs} p50")
    report.add(f"{name} p90", percentile(times, 90) * 1000, "ms", vs=vs and f"{vs} p90")
    report.add(f"{name} max", max(times, default=0) * 1000, "ms")
    report.add(f"{name} refused", refused, f"of {len(times)}")


async def run(options: Options) -> Report:
    seconds = options.seconds or (4.0 if options.quick else 20.0)
    report = Report("logins", params={"seconds": seconds, "spray_parallel": 80})
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        up = await _up(Path(tmp), port)
        try:
            url = f"nats://{HOST}:{port}"
            accounts: tuple[tuple[str, str, Literal["renter", "provider"]], ...] = (
                ("alice", "alice-pass-1", "renter"),
                ("bob", "bob-pass-12", "provider"),
            )
            for name, password, role in accounts:  # one sign-up connection, one account
                nc = await connect(url, name="bench", credential=signup_credential(new_nonce()))
                await sign_up(nc, name, password, role)
                await nc.close()
            owner = await connect(url, name="bench", credential=Credential("bob", "bob-pass-12"))
            token = (await issue_token(owner, "bob", label="agent")).token
            await owner.close()

            bob = ("bob", "bob-pass-12", "127.0.0.2")
            agent = ("bob/prv-1", token, "127.0.0.2")
            times, refused = await _legitimate(port, [bob], min(seconds, 10))
            _latencies(report, "password login, quiet", times, refused)
            times, refused = await _legitimate(port, [agent], min(seconds, 10))
            _latencies(report, "token login, quiet", times, refused)

            server = _nats_server(up)
            # Guessing bob's password from one address.
            attacker = _Attacker(port, "127.0.0.66", "bob", "wrong-guess", parallel=2)
            cpu = _Cpu(up, server)
            started = time.monotonic()
            attacker.start()
            await asyncio.sleep(1.0)  # its failures pile up
            times, refused = await _legitimate(port, [bob], seconds)
            _latencies(report, "password login, guessing", times, refused, "password login, quiet")
            agent_there = ("bob/prv-1", token, "127.0.0.66")
            times, refused = await _legitimate(port, [agent_there], min(seconds, 5))
            _latencies(
                report,
                "token login from the guesser's address",
                times,
                refused,
                "token login, quiet",
            )
            used = attacker.cpu_seconds()
            tally = attacker.stop()
            took = time.monotonic() - started
            report.add("guesser's attempts", tally.tries / took, "/s")
            report.add("guesser let in", tally.let_in, f"of {tally.tries}")
            cpu.report(report, "guessed", used)

            # A spray of random names, 80 at a time, from one address.
            attacker = _Attacker(port, "127.0.0.77", "*", "guess-pass", parallel=80)
            cpu = _Cpu(up, server)
            started = time.monotonic()
            attacker.start()
            await asyncio.sleep(1.0)
            alice = ("alice", "alice-pass-1", "127.0.0.3")
            times, refused = await _legitimate(port, [alice], seconds)
            _latencies(report, "password login, spray", times, refused, "password login, quiet")
            used = attacker.cpu_seconds()
            tally = attacker.stop()
            took = time.monotonic() - started
            report.add("sprayer's attempts", tally.tries / took, "/s")
            report.add("sprayer let in", tally.let_in, f"of {tally.tries}")
            cpu.report(report, "sprayed", used)
        finally:
            up.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                up.wait(timeout=30)
            if up.poll() is None:
                up.kill()
    report.notes.append(
        f"scrypt N = 2^{os.environ.get('DANTE_SCRYPT_LOG2_N', '17')}; each login is a new "
        "TCP connection and CONNECT, answered PONG or -ERR"
    )
    return report


if __name__ == "__main__":
    port, source, user, password, parallel = sys.argv[1:6]
    asyncio.run(_attack(int(port), source, user, password, int(parallel)))
