from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import nats
import pytest

from dante.events.natsd import (
    KEEP_LOGS,
    ListenFailed,
    NatsServer,
    NatsServerError,
    default_config,
)
from dante.services.auth.installation import InstallationSecrets


def test_server_reports_its_port_and_stops(tmp_path: Path) -> None:
    server = NatsServer(store_dir=tmp_path / "s").start()
    assert server.client_port is not None and server.client_port > 0
    assert server.process is not None
    process = server.process
    server.stop()
    assert process.poll() is not None


def test_start_failure_carries_the_servers_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("jetstream { max_file_store: not-a-size }\n")
    with pytest.raises(NatsServerError, match="exited"):
        NatsServer(store_dir=tmp_path / "s", config=bad).start()


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_taken_client_port_is_named(tmp_path: Path, taken_port: int) -> None:
    server = NatsServer(store_dir=tmp_path / "s", port=taken_port, monitor_port=-1)
    with pytest.raises(ListenFailed) as failed:
        server.start()
    assert (failed.value.listener, failed.value.port) == ("client", taken_port)
    assert failed.value.in_use and failed.value.address == "127.0.0.1"
    assert f"could not listen on its client port {taken_port} " in str(failed.value)
    assert server.process is None and server.monitor_url is None


def test_a_taken_monitor_port_is_named(tmp_path: Path, taken_port: int) -> None:
    server = NatsServer(store_dir=tmp_path / "s", monitor_port=taken_port)
    with pytest.raises(ListenFailed) as failed:
        server.start()
    assert (failed.value.listener, failed.value.port, failed.value.in_use) == (
        "monitor",
        taken_port,
        True,
    )
    assert f"could not listen on its monitor port {taken_port} " in str(failed.value)


def test_a_listen_failure_is_read_from_nats_server_words() -> None:
    log = (
        "[7] 2026/01/01 00:00:00.000000 [FTL] Can't start monitoring: can't listen to the "
        "monitor port: listen tcp 0.0.0.0:80: bind: permission denied\n"
    )
    found = ListenFailed.find(log)
    assert found is not None
    assert (found.listener, found.address, found.port) == ("monitor", "0.0.0.0", 80)
    assert found.reason == "bind: permission denied" and not found.in_use
    client = ListenFailed.find(
        '[7] [FTL] Error listening on port: [::1]:4222, "listen tcp [::1]:4222: bind: '
        'address already in use"\n'
    )
    assert client is not None
    assert (client.listener, client.address, client.port, client.in_use) == (
        "client",
        "[::1]",
        4222,
        True,
    )
    assert ListenFailed.find("[7] [FTL] Can't start JetStream: no space left\n") is None
    assert ListenFailed.find("[7] [INF] Listening for client connections on 0.0.0.0:4222") is None


def test_shipped_config_starts_a_jetstream_server(tmp_path: Path) -> None:
    env = InstallationSecrets.generate().server_env()
    with NatsServer(
        store_dir=tmp_path / "s", config=default_config(), monitor_port=-1, env=env
    ) as server:
        assert server.http_port is not None
        assert server.monitor_url == f"http://127.0.0.1:{server.http_port}"
        assert "jetstream" in (tmp_path / "s" / "nats-server.log").read_text().lower()


def test_shipped_config_does_not_start_without_the_installations_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Secure by default: no issuer key and platform password, no server (never an open one).
    monkeypatch.delenv("DANTE_AUTH_ISSUER", raising=False)
    monkeypatch.delenv("DANTE_PLATFORM_PASSWORD", raising=False)
    monkeypatch.delenv("DANTE_SYSTEM_PASSWORD", raising=False)
    with pytest.raises(NatsServerError, match="DANTE_"):
        NatsServer(store_dir=tmp_path / "s", config=default_config(), monitor_port=-1).start()


@pytest.mark.anyio
@pytest.mark.cluster
async def test_cluster_replicates_a_stream(nats_cluster: list[NatsServer]) -> None:
    from dante.events.records import Append
    from dante.events.store import EventStore
    from dante.events.streams import LogSettings, ensure_log
    from tests.factories import deposit

    urls = [node.url for node in nats_cluster]
    client = await nats.connect(servers=urls)
    try:
        js = client.jetstream()
        await ensure_log(js, LogSettings(replicas=3))
        store = EventStore(client)
        result = await store.append(Append(event=deposit("alice", 5), expected=0))
        info = await js.stream_info("DANTE")
        assert info.config.num_replicas == 3
        assert info.cluster is not None
        assert len(info.cluster.replicas or []) == 2
        assert result.seqs == (1,)
    finally:
        await client.close()


# ── Surviving bad days: its parent killed, a stale server left behind, the server killed ──


def _gone(pid: int, timeout: float) -> bool:
    """Whether process `pid` exits (or is a zombie) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


def _wait_ready(server: NatsServer, pid: int, timeout: float = 10) -> None:
    """Until the nats-server `pid`, started by hand with `server`'s command line, is ready."""
    deadline = time.monotonic() + timeout
    while not (
        server.pid_file.exists()
        and server.pid_file.read_text() == str(pid)
        and "Server is ready" in server.log_file.read_text()
    ):
        assert time.monotonic() < deadline, "the nats-server started by hand is not ready"
        time.sleep(0.02)


@pytest.mark.parametrize("how", ["signal", "watchdog"])
def test_the_server_dies_with_the_process_that_started_it(tmp_path: Path, how: str) -> None:
    store = tmp_path / "s"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from dante.events.natsd import NatsServer\n"
        f"server = NatsServer(store_dir=Path({str(store)!r}), parent_death={how!r}).start()\n"
        "assert server.process is not None\n"
        "print(server.process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    try:
        pid = int(parent.stdout.readline())
        assert not _gone(pid, timeout=0.2)
        parent.kill()
        parent.wait()
        assert _gone(pid, timeout=3)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    # It was asked to stop (SIGTERM), not killed: it said goodbye in its log.
    assert "Server Exiting" in (store / "nats-server.log").read_text()


def test_a_server_started_by_a_thread_outlives_the_thread(tmp_path: Path) -> None:
    # Linux sends the parent-death signal when the *thread* that forked exits.
    started: list[NatsServer] = []
    thread = threading.Thread(
        target=lambda: started.append(NatsServer(store_dir=tmp_path / "s").start())
    )
    thread.start()
    thread.join()
    server = started[0]
    try:
        assert server.process is not None
        assert not _gone(server.process.pid, timeout=0.5)
    finally:
        server.stop()


def test_each_start_keeps_the_earlier_logs(tmp_path: Path) -> None:
    pids = []
    for _ in range(KEEP_LOGS + 2):
        server = NatsServer(store_dir=tmp_path / "s").start()
        assert server.process is not None
        pids.append(server.process.pid)
        server.stop()
    logs = tmp_path / "s"
    assert f"[{pids[-1]}] " in (logs / "nats-server.log").read_text()
    for n in range(1, KEEP_LOGS + 1):
        kept = (logs / f"nats-server.log.{n}").read_text()
        assert f"[{pids[-1 - n]}] " in kept and "Server Exiting" in kept
    assert not (logs / f"nats-server.log.{KEEP_LOGS + 1}").exists()
    assert not (logs / "nats-server.pid").exists()  # each stop took its pid file along


def test_a_store_in_use_is_not_started_twice(tmp_path: Path) -> None:
    with NatsServer(store_dir=tmp_path / "s") as first:
        with pytest.raises(
            NatsServerError,
            match=rf"another process \(pid {os.getpid()}\) runs a nats-server on {tmp_path}",
        ):
            NatsServer(store_dir=tmp_path / "s").start()
        # Not taken for a stale one and stopped, and its log is where it was.
        assert first.process is not None and first.process.poll() is None
        assert f"[{first.process.pid}] " in first.log_file.read_text()
    NatsServer(store_dir=tmp_path / "s").start().stop()  # free again once it stopped


def test_a_start_stops_a_stale_server_of_its_store_and_nothing_else(tmp_path: Path) -> None:
    said: list[str] = []
    store = tmp_path / "s"
    by_hand = NatsServer(store_dir=store)
    store.mkdir()
    # A server of the store nobody stops (its command line, its pid file), and one of another.
    stale = subprocess.Popen(by_hand.command(), stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    other = NatsServer(store_dir=tmp_path / "other").start()
    try:
        _wait_ready(by_hand, stale.pid)
        NatsServer(store_dir=store, say=said.append).start().stop()
        assert stale.wait(timeout=1) == 0  # asked to stop, and it did
        assert said == [f"stopping a stale nats-server (pid {stale.pid}) of {store}"]
        kept = (store / "nats-server.log.1").read_text()
        assert f"[{stale.pid}] " in kept and "Server Exiting" in kept

        assert other.process is not None
        (store / "nats-server.pid").write_text(f"{other.process.pid}")
        NatsServer(store_dir=store, say=said.append).start().stop()
        assert other.process.poll() is None and len(said) == 1
    finally:
        other.stop()
        stale.kill()
        stale.wait()


async def _until(condition: Callable[[], bool], timeout: float = 20) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.02)


def _hold(port: int) -> socket.socket:
    """Listen on `port` as soon as the server that had it is gone."""
    deadline = time.monotonic() + 5
    while True:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            assert time.monotonic() < deadline
            time.sleep(0.005)
            continue
        sock.listen()
        return sock


@pytest.mark.anyio
async def test_supervise_restarts_a_dead_server_with_its_store_and_ports(tmp_path: Path) -> None:
    said: list[str] = []
    server = NatsServer(store_dir=tmp_path / "s", monitor_port=-1, say=said.append).start()
    ports = (server.client_port, server.http_port)
    back = f"nats-server is back on {server.url}"
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        js = nc.jetstream()
        await js.add_stream(name="S", subjects=["s.>"])
        await js.publish("s.one", b"1")
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(server.supervise, delays=(0.0, 0.5)))
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGKILL)
            await _until(lambda: back in said)
            assert (server.client_port, server.http_port) == ports
            # The client came back to the same URL, and the stream was kept.
            assert (await js.publish("s.two", b"2")).seq == 2

            # Dead again at once: restarted after a delay; it cannot listen (its port was
            # taken meanwhile), so it tries again, and comes back once the port is free.
            os.kill(server.process.pid, signal.SIGKILL)
            assert server.client_port is not None
            with _hold(server.client_port):
                await _until(lambda: any("did not restart" in line for line in said))
            await _until(lambda: said.count(back) == 2)
            assert (await js.publish("s.three", b"3")).seq == 3
            tg.cancel_scope.cancel()
    finally:
        await nc.close()
        server.stop()
    assert said[:2] == ["nats-server exited with code -9; restarting (1)", back]
    assert said[2] == "nats-server exited with code -9; restarting (2) in 0.5s"
    assert said[3].startswith(
        f"nats-server did not restart: nats-server could not listen on its client port "
        f"{ports[0]} (on 127.0.0.1): bind: address already in use; restarting (3) in 0.5s"
    )
    assert said[4:] == [back]
