from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from dante.events.natsd import ListenFailed, NatsServer, NatsServerError, default_config
from dante.handlers.auth.installation import InstallationSecrets


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
async def test_cluster_replicates_a_stream(nats_cluster: list[NatsServer]) -> None:
    from dante.events.store import Append, EventStore
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
