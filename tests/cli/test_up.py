"""`dante up` as a real process: it answers `dante status`, stops on SIGTERM, resumes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dante.client.commands import Client, CommandError
from dante.client.connect import connect
from dante.client.credentials import Credential
from dante.events.natsd import NatsServer, default_config
from dante.schemas.commands import GetBalance
from dante.schemas.results import WalletResult
from dante.schemas.views import Balance
from dante.services.auth.installation import InstallationSecrets
from tests.cli.platform_proc import UpProcess, dante, environment, free_port
from tests.funding import fund

pytestmark = pytest.mark.anyio

ALICE = {"DANTE_USERNAME": "alice", "DANTE_PASSWORD": "alice-secret-1"}


async def deposit(url: str, amount: int) -> WalletResult:
    credential = Credential(username="alice", secret=ALICE["DANTE_PASSWORD"], role="renter")
    nc = await connect(url, name="test", credential=credential)
    try:
        return await fund(Client(nc, "renter", "alice"), amount)
    finally:
        await nc.close()


async def test_up_status_stop_and_resume(tmp_path: Path) -> None:
    platform = UpProcess(tmp_path / "data").start()
    try:
        result = platform.dante("status", "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["ok"] is True and report["services"][0]["name"] == "dante"
        created = platform.dante("account", "create", "--role", "renter", **ALICE)
        assert created.returncode == 0, created.stderr
        first = json.loads(platform.dante("status", "--json").stdout)["stream"]["last_seq"]
        assert first >= 1  # the account's opening is in the log, its secret is not
        assert (await deposit(platform.url, 5_000_000)).available_udgpu == 5_000_000
    finally:
        assert platform.stop() == 0
    assert "stopping (SIGTERM)" in "".join(platform.output)
    # The embedded nats-server went with it: nothing answers any more.
    result = platform.dante("status")
    assert result.returncode == 3 and "cannot reach" in result.stderr
    # The handlers' process saved its world as it stopped: the next start begins there.
    snapshot = tmp_path / "data" / "world.snapshot"
    assert snapshot.exists() and snapshot.stat().st_mode & 0o777 == 0o600

    again = UpProcess(tmp_path / "data", platform.port).start()
    try:
        report = json.loads(again.dante("status", "--json").stdout)
        assert report["stream"]["last_seq"] == first + 2  # the deposit and its payment
        assert (await deposit(again.url, 1_000_000)).available_udgpu == 6_000_000
    finally:
        assert again.stop() == 0


def test_status_without_a_platform_exits_3(tmp_path: Path) -> None:
    result = dante("status", "--nats-url", "nats://127.0.0.1:1")
    assert result.returncode == 3
    assert "cannot reach the platform" in result.stderr


def test_up_refuses_a_taken_port(tmp_path: Path) -> None:
    first = UpProcess(tmp_path / "a").start()
    try:
        result = first.dante(
            "up",
            "--data-dir",
            str(tmp_path / "b"),
            "--port",
            str(first.port),
            "--monitor-port",
            "-1",
        )
        assert result.returncode == 1
        assert f"could not listen on its client port {first.port} " in result.stderr
        assert f"port {first.port} is taken" in result.stderr
        assert "try another --port" in result.stderr and "monitor" not in result.stderr
    finally:
        first.stop()


def _port_and_another_free() -> tuple[int, int]:
    """Two free ports, for the client and the monitoring."""
    while True:
        port, monitor = free_port(), free_port()
        if port != monitor:
            return port, monitor


def _varz(monitor: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{monitor}/varz", timeout=10) as reply:
        varz: dict[str, object] = json.load(reply)
        return varz


def test_monitoring_is_off_unless_asked_for_and_status_says_where(tmp_path: Path) -> None:
    (port, monitor_port), (other, _) = _port_and_another_free(), _port_and_another_free()
    watched = UpProcess(tmp_path / "on", port, "--processes", "1", monitor_port=monitor_port)
    quiet = UpProcess(tmp_path / "off", other, "--processes", "1", monitor_port=None)
    try:
        watched.start()
        quiet.start()
        monitor = f"http://127.0.0.1:{monitor_port}"
        assert f"nats-server monitoring: {monitor}\n" in watched.output
        result = watched.dante("status", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["monitoring"] == [monitor]
        human = watched.dante("status")
        assert human.returncode == 0, human.stderr
        assert any(
            line.split() == ["NATS", "monitoring", monitor] for line in human.stdout.splitlines()
        ), human.stdout
        # It is this platform's own nats-server that answers there, on loopback only.
        assert _varz(monitor)["port"] == watched.port
        # Without --monitor-port nothing answers HTTP, and status says it is off.
        assert "nats-server monitoring" not in "".join(quiet.output)
        report = json.loads(quiet.dante("status", "--json").stdout)
        assert report["monitoring"] == [] and report["monitoring_off"] == 1
        human = quiet.dante("status")
        assert "off (`dante up --monitor-port PORT` turns it on)" in human.stdout
        assert quiet.process is not None
        ports = _listening_ports(quiet.process.pid)
        assert ports == {other}, ports  # the client port, nothing else
    finally:
        for platform in (watched, quiet):
            if platform.process is not None:
                assert platform.stop() == 0


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports the embedded nats-server under `pid` listens on."""
    servers = [p for p, cmd in _children(pid).items() if b"nats-server" in cmd]
    assert len(servers) == 1
    inodes = set()
    for fd in Path(f"/proc/{servers[0]}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = str(fd.readlink())
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@contextmanager
def _taken(port: int) -> Iterator[None]:
    """`port` on loopback held by another program."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield


def test_up_names_the_monitor_port_that_is_taken(tmp_path: Path) -> None:
    port, monitor = _port_and_another_free()
    up = ("up", "--data-dir", str(tmp_path), "--port", str(port))
    with _taken(monitor):
        ran = dante(*up, "--monitor-port", str(monitor), env=environment(), clean=True)
    assert ran.returncode == 1, ran.stderr
    assert f"could not listen on its monitor port {monitor} " in ran.stderr
    assert f"port {monitor} is taken" in ran.stderr
    assert f"port {port} is taken" not in ran.stderr and "client port" not in ran.stderr
    assert "try another --monitor-port (-1: any free one)" in ran.stderr


@pytest.mark.parametrize("variable", ["DANTE_NATS_URL", "NATS_ADDRESS"])
def test_up_uses_the_server_the_environment_names(tmp_path: Path, variable: str) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    # The server an operator runs with the installation's nats.env (the auth callout's keys).
    installation = InstallationSecrets.load_or_create(data_dir)
    with NatsServer(
        store_dir=tmp_path / "nats",
        config=default_config(),
        monitor_port=-1,  # nats.conf's own 8222 may be another platform's
        env=installation.server_env(),
    ) as server:
        platform = UpProcess(
            data_dir, None, "--processes", "1", env={variable: server.url}, nats_url=server.url
        ).start()
        try:
            assert platform.process is not None
            said = "".join(platform.output)
            assert f"using the NATS server at {server.url} " in said
            assert f"Dante is up on {server.url} " in said
            assert "nats-server monitoring" not in said
            children = _children(platform.process.pid).values()
            assert not any(b"nats-server" in cmd for cmd in children)
            assert not (data_dir / "nats").exists()  # no embedded server's store
            result = platform.dante("status", "--json")
            assert result.returncode == 0, result.stderr
            report = json.loads(result.stdout)
            assert report["ok"] is True and report["services"][0]["name"] == "dante"
            assert report["monitoring"] == []  # not a server `dante up` started
        finally:
            assert platform.stop() == 0
        assert server.process is not None and server.process.poll() is None  # not its to stop


def test_a_port_on_the_command_line_starts_a_server_despite_the_environment(
    tmp_path: Path,
) -> None:
    nowhere = {"DANTE_NATS_URL": "nats://127.0.0.1:1", "NATS_ADDRESS": "nats://127.0.0.1:1"}
    platform = UpProcess(tmp_path / "data", None, "--processes", "1", env=nowhere).start()
    try:
        assert f"Dante is up on {platform.url} " in "".join(platform.output)
        assert platform.dante("status").returncode == 0
    finally:
        assert platform.stop() == 0


def test_up_refuses_a_port_with_nats_url(tmp_path: Path) -> None:
    for option in ("--port", "--monitor-port"):
        result = dante(
            "up", "--data-dir", str(tmp_path), "--nats-url", "nats://127.0.0.1:1", option, "4333"
        )
        assert result.returncode == 2
        assert "with --nats-url `dante up` starts none" in result.stderr
    assert not (tmp_path / "secrets.json").exists()


def _children(pid: int) -> dict[int, bytes]:
    """The processes whose parent is `pid`, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
    return found


def _serve_child(pid: int, other_than: int | None = None, timeout: float = 30) -> int:
    """The `dante serve handlers views` child of `dante up` (a new one, if `other_than`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child, cmdline in _children(pid).items():
            if b"\x00serve\x00handlers\x00views\x00" in cmdline and child != other_than:
                return child
        time.sleep(0.1)
    raise AssertionError(f"no `dante serve` child of {pid}")


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":  # exited, not yet reaped by its (killed) parent
            return True
        time.sleep(0.1)
    return False


async def balance(url: str) -> Balance:
    credential = Credential(username="alice", secret=ALICE["DANTE_PASSWORD"], role="renter")
    nc = await connect(url, name="test", credential=credential)
    try:
        return await Client(nc, "renter", "alice").send(GetBalance(), Balance)
    finally:
        await nc.close()


async def test_up_runs_handlers_and_views_in_a_child_it_restarts_and_takes_along(
    tmp_path: Path,
) -> None:
    platform = UpProcess(tmp_path / "data", None, "--processes", "2").start()
    assert platform.process is not None
    up_pid = platform.process.pid
    server = next(pid for pid, cmd in _children(up_pid).items() if b"nats-server" in cmd)
    try:
        child = _serve_child(up_pid)
        assert platform.dante("account", "create", "--role", "renter", **ALICE).returncode == 0
        await deposit(platform.url, 5_000_000)
        # The deposit went through this process; its balance comes from the child's views.
        assert (await balance(platform.url)).deposited_udgpu == 5_000_000

        os.kill(child, signal.SIGKILL)
        again = _serve_child(up_pid, other_than=child)
        await deposit(platform.url, 1_000_000)
        assert (await balance(platform.url)).deposited_udgpu == 6_000_000

        # However `dante up` goes, its child goes with it (it reads the end of its stdin),
        # and so does its nats-server (see test_a_killed_up_takes_its_nats_server_along).
        os.kill(up_pid, signal.SIGKILL)
        assert _gone(again, timeout=20)
    finally:
        platform.stop(signal.SIGKILL)
        if not _gone(server, timeout=5):
            os.kill(server, signal.SIGTERM)
    assert "`dante serve handlers views` stopped (exit code -9); restarting it" in "".join(
        platform.output
    )


def test_up_refuses_a_process_count_it_has_no_layout_for(tmp_path: Path) -> None:
    result = dante("up", "--data-dir", str(tmp_path), "--processes", "3")
    assert result.returncode == 2
    assert "--processes is 1 or 2, not 3" in result.stderr
    assert not (tmp_path / "secrets.json").exists()


def test_serve_without_the_platform_password_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DANTE_PLATFORM_PASSWORD"}
    result = dante("serve", "handlers", "--data-dir", str(tmp_path), env=env, clean=True)
    assert result.returncode == 2
    assert "no platform password" in result.stderr and "secrets.json" in result.stderr
    result = dante("serve", "bogus", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "Choose from" in result.stderr


# ── The embedded nats-server on bad days ─────────────────────────────────────────────────


def _server_pid(data_dir: Path) -> int:
    """The pid in the embedded nats-server's pid file."""
    return int((data_dir / "nats" / "nats-server.pid").read_text())


def _serves(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is a live nats-server with the store of `data_dir`."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    store = str((data_dir / "nats").absolute()).encode()
    return bool(args[0]) and args[0].endswith(b"nats-server") and store in args


def _new_server(data_dir: Path, other_than: int, timeout: float = 10) -> int:
    """The pid of the nats-server of `data_dir` that replaced `other_than`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = _server_pid(data_dir)
        except (OSError, ValueError):
            pid = other_than
        if pid != other_than and _serves(pid, data_dir):
            return pid
        time.sleep(0.05)
    raise AssertionError(f"no new nats-server of {data_dir}")


def test_a_killed_up_takes_its_nats_server_along_and_the_next_starts_at_once(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    platform = UpProcess(data_dir, None, "--processes", "1").start()
    assert platform.process is not None
    server = _server_pid(data_dir)
    assert _serves(server, data_dir)
    assert server in _children(platform.process.pid)
    platform.stop(signal.SIGKILL)
    # The kernel told it its parent died (SIGTERM): it stops, and frees the port.
    assert _gone(server, timeout=3)

    began = time.monotonic()
    again = UpProcess(data_dir, platform.port, "--processes", "1").start()
    try:
        assert time.monotonic() - began < 20
        result = again.dante("status", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["ok"] is True
        assert _serves(_server_pid(data_dir), data_dir)
        # A second `dante up` on the data folder does not take it from a running one.
        assert again.process is not None
        second = dante(
            *("up", "--data-dir", str(data_dir), "--port", str(free_port())),
            *("--monitor-port", "-1"),
            env=environment(),
            clean=True,
        )
        assert second.returncode == 1
        assert f"another process (pid {again.process.pid}) runs a nats-server on " in (
            second.stderr
        )
        assert again.dante("status").returncode == 0
    finally:
        assert again.stop() == 0
    said = "".join(again.output)
    assert "stopping a stale nats-server" not in said  # nothing was left to stop
    # The log of the server that went with the killed `dante up` was kept, to the end.
    kept = (data_dir / "nats" / "nats-server.log.1").read_text()
    assert f"[{server}] " in kept and "Server is ready" in kept and "Server Exiting" in kept
    assert f"[{server}] " not in (data_dir / "nats" / "nats-server.log").read_text()
    # A clean stop leaves no pid file behind.
    assert not (data_dir / "nats" / "nats-server.pid").exists()


def test_the_next_up_stops_a_stale_nats_server_but_not_a_process_that_took_its_pid(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    installation = InstallationSecrets.load_or_create(data_dir)
    port = free_port()
    # An orphan: a nats-server of the data folder, started as `dante up` starts it (its very
    # command line, pid file included) but by nobody who will stop it.
    as_up = NatsServer(
        store_dir=data_dir / "nats",
        port=port,
        config=default_config(),
        monitor_port=-1,
        env=installation.server_env(),
    )
    as_up.store_dir.mkdir()
    orphan = subprocess.Popen(
        as_up.command(),
        env={**os.environ, **installation.server_env()},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    sleeper = None
    try:
        assert _new_server(data_dir, other_than=0) == orphan.pid
        while "Server is ready" not in as_up.log_file.read_text():
            time.sleep(0.05)

        platform = UpProcess(data_dir, port, "--processes", "1").start()
        try:
            # It was stopped, gently, before the new one took its port.
            assert orphan.wait(timeout=1) == 0
            assert platform.dante("status").returncode == 0
            assert _server_pid(data_dir) != orphan.pid
        finally:
            assert platform.stop() == 0
        said = "".join(platform.output)
        assert f"dante up: stopping a stale nats-server (pid {orphan.pid}) of " in said
        kept = (data_dir / "nats" / "nats-server.log.1").read_text()
        assert f"[{orphan.pid}] " in kept and "Server Exiting" in kept

        # A pid file naming a process that is not a nats-server (its server long gone, the
        # pid reused), even one that names the store on its command line: it is left alone.
        store = str((data_dir / "nats").absolute())
        sleeper = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)", "-sd", store]
        )
        (data_dir / "nats" / "nats-server.pid").write_text(f"{sleeper.pid}")
        again = UpProcess(data_dir, port, "--processes", "1").start()
        try:
            assert again.dante("status").returncode == 0
        finally:
            assert again.stop() == 0
        assert sleeper.poll() is None
        assert "stopping a stale nats-server" not in "".join(again.output)
    finally:
        for process in (orphan, sleeper):
            if process is not None and process.poll() is None:
                process.kill()
            if process is not None:
                process.wait()


async def _balance_once_caught_up(url: str, deadline: float) -> Balance:
    """alice's balance, asked again while the views say they are behind, until `deadline`."""
    while True:
        try:
            return await balance(url)
        except CommandError as behind:
            if behind.code != "unavailable" or time.monotonic() > deadline:
                raise


async def test_up_restarts_its_nats_server_when_it_dies_and_serves_again(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    platform = UpProcess(data_dir, None, "--processes", "2").start()
    try:
        assert platform.dante("account", "create", "--role", "renter", **ALICE).returncode == 0
        await deposit(platform.url, 5_000_000)
        first = json.loads(platform.dante("status", "--json").stdout)["stream"]["last_seq"]

        server = _server_pid(data_dir)
        os.kill(server, signal.SIGKILL)
        again = _new_server(data_dir, other_than=server)
        # The platform's connections (and its child's) come back by themselves.
        deadline = time.monotonic() + 20
        while (status := platform.dante("status", "--json")).returncode != 0:
            assert time.monotonic() < deadline, status.stderr
            time.sleep(0.2)
        assert json.loads(status.stdout)["stream"]["last_seq"] == first
        assert (await deposit(platform.url, 1_000_000)).available_udgpu == 6_000_000
        # Its views, in the child, follow the log again: once nats-py's ordered consumer has
        # missed two heartbeats (5 s apart) and made a new one (dante.events.store).
        views = await _balance_once_caught_up(platform.url, deadline + 10)
        assert views.deposited_udgpu == 6_000_000
        events = platform.dante("events", "--wallet", "alice", "--json")
        assert events.returncode == 0, events.stderr
        assert _server_pid(data_dir) == again  # on the one restart
    finally:
        assert platform.stop() == 0
    said = "".join(platform.output)
    assert "dante up: nats-server exited with code -9; restarting (1)\n" in said
    assert f"dante up: nats-server is back on {platform.url}\n" in said
    assert said.count("restarting (") == 1
    # Every event is in the log, once: the account, the deposit before and the one after
    # (each deposit's payment is on its own subject, between them).
    logged = [json.loads(line) for line in events.stdout.splitlines()]
    assert [entry["seq"] for entry in logged] == [1, 2, first + 1]
    assert [(e["event"]["type"], e["event"].get("amount")) for e in logged] == [
        ("AccountOpened", None),
        ("FundsDeposited", 5_000_000),
        ("FundsDeposited", 1_000_000),
    ]
    assert len({entry["event"]["event_id"] for entry in logged}) == len(logged)
