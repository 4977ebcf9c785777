from __future__ import annotations

from pathlib import Path

import nats
import pytest

from dante.events.natsd import NatsServer, NatsServerError, default_config
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


def test_shipped_config_starts_a_jetstream_server(tmp_path: Path) -> None:
    env = InstallationSecrets.generate().server_env()
    with NatsServer(
        store_dir=tmp_path / "s", config=default_config(), monitor_port=-1, env=env
    ) as server:
        assert server.http_port is not None
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
