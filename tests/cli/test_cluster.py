"""`dante cluster init` and the README's "Run on a cluster", as real processes: the
configurations it writes start a real three-node cluster the platform runs on."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import anyio
import pytest

from dante.client.connect import connect, elsewhere_first
from dante.client.credentials import Credential, platform_credential
from dante.events.natsd import NatsServer
from dante.events.store import EventStore
from dante.events.streams import LogSettings, ensure_log
from dante.events.subjects import STREAM
from dante.services.auth.installation import InstallationSecrets
from dante.services.auth.service import Identity
from tests.cli.cli import run_dante
from tests.cli.platform_proc import UpProcess, environment
from tests.cluster_proc import Cluster, ServeProcess

JOB = "print('trained on the cluster')\n"


def init(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dante", "cluster", "init", *args],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=60,
        check=False,
    )


def test_init_writes_the_secrets_and_a_private_configuration_per_node(tmp_path: Path) -> None:
    out = tmp_path / "cluster"
    done = init(
        "--out", str(out), "--port", "14222", "--cluster-port", "16222", "--monitor-port", "8222"
    )
    assert done.returncode == 0, done.stderr
    names = ["secrets.json", "nats.env", "node-1.conf", "node-2.conf", "node-3.conf"]
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(names)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for name in names:
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    for i in (1, 2, 3):
        assert stat.S_IMODE((out / f"node-{i}").stat().st_mode) == 0o700
    # The secrets are those `dante up` reads from its data folder.
    secrets = InstallationSecrets.load_or_create(out)
    env = (out / "nats.env").read_text()
    assert f"DANTE_ROUTE_PASSWORD={secrets.route_password}\n" in env
    assert f"DANTE_AUTH_ISSUER={secrets.signer.public_key}\n" in env

    two = (out / "node-2.conf").read_text()
    assert 'server_name: "node-2"' in two
    assert 'listen: "127.0.0.1:14223"' in two
    assert 'http: "127.0.0.1:8223"' in two  # asked for: on loopback
    assert f'store_dir: "{out / "node-2"}"' in two
    assert 'domain: "dante"' in two
    assert 'include "nats.env"' in two
    for port in (16222, 16223, 16224):
        assert f"@127.0.0.1:{port}" in two
    # The accounts and the auth callout come from nats.conf, the same on every node.
    assert "auth_callout {" in two and "issuer: $DANTE_AUTH_ISSUER" in two
    assert "server_name: dante\n" not in two
    # Monitoring has no authentication: off unless asked for.
    quiet = tmp_path / "quiet"
    assert init("--out", str(quiet)).returncode == 0
    assert "\nhttp:" not in (quiet / "node-1.conf").read_text()
    # nats-server itself accepts each one.
    server = run_dante("cluster", "server-path", url=None).out.strip()
    for i in (1, 2, 3):
        checked = subprocess.run(
            [server, "-t", "-c", str(out / f"node-{i}.conf")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "dante up --nats-url nats://127.0.0.1:14222,nats://127.0.0.1:14223," in done.stdout


def test_one_host_per_node_gives_each_the_same_ports(tmp_path: Path) -> None:
    hosts = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    done = init("--out", str(tmp_path / "c"), "--host", *hosts)
    assert done.returncode == 0, done.stderr
    three = (tmp_path / "c" / "node-3.conf").read_text()
    assert 'listen: "10.0.0.3:4222"' in three
    assert 'listen: "10.0.0.3:6222"' in three
    assert "@10.0.0.1:6222" in three and "@10.0.0.2:6222" in three


def test_init_refuses_to_replace_an_installation_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "cluster"
    assert init("--out", str(out)).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    again = init("--out", str(out))
    assert again.returncode == 1
    assert "holds an installation already (secrets.json, node-1.conf" in again.stderr
    assert "--force" in again.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before

    forced = init("--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (out / "secrets.json").read_bytes() != before["secrets.json"]
    assert (out / "node-1.conf").read_bytes() != before["node-1.conf"]  # the new route password


def test_keep_secrets_writes_the_nodes_with_the_secrets_a_folder_has(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir(mode=0o700)
    # An installation from before clusters: no route password yet.
    made = InstallationSecrets.generate()
    legacy = {
        "issuer_seed": made.issuer_seed,
        "platform_password": made.platform_password,
        "operator_token": made.operator_token,
        "system_password": made.system_password,
    }
    (out / "secrets.json").write_text(json.dumps(legacy))
    (out / "secrets.json").chmod(0o600)
    assert init("--out", str(out)).returncode == 1  # refused: it has secrets

    kept = init("--out", str(out), "--keep-secrets")
    assert kept.returncode == 0, kept.stderr
    secrets = InstallationSecrets.load_or_create(out)
    assert (secrets.issuer_seed, secrets.platform_password, secrets.operator_token) == (
        made.issuer_seed,
        made.platform_password,
        made.operator_token,
    )
    assert secrets.route_password  # made now, and in the routes
    assert f"dante-route:{secrets.route_password}@" in (out / "node-1.conf").read_text()
    assert stat.S_IMODE((out / "secrets.json").stat().st_mode) == 0o600

    both = init("--out", str(out), "--keep-secrets", "--force")
    assert both.returncode == 2 and "give one" in both.stderr


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--nodes", "3", "--host", "10.0.0.1", "10.0.0.2"], "2 hosts for 3 nodes"),
        (["--nodes", "0"], "at least one node"),
        (["--port", "6221"], "ports overlap"),
        (["--port", "65534"], "not all from 1 to 65535"),
    ],
)
def test_init_refuses_a_plan_that_cannot_work_and_writes_nothing(
    tmp_path: Path, args: list[str], why: str
) -> None:
    done = init("--out", str(tmp_path / "c"), *args)
    assert done.returncode == 2
    assert why in done.stderr
    assert not (tmp_path / "c").exists()


def test_server_path_names_the_nats_server_that_comes_with_dante() -> None:
    ran = run_dante("cluster", "server-path", url=None)
    assert ran.code == 0, ran
    path = Path(ran.out.strip())
    assert path.name == "nats-server" and os.access(path, os.X_OK)


# ── The README's path: three nodes, `dante up` and `dante serve handlers` on them ───────


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster.init(tmp_path / "data", env=environment())
    started.start_all()
    try:
        yield started
    finally:
        started.stop()


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.anyio
async def test_the_readme_cluster_runs_a_renters_job_with_a_clean_audit(
    cluster: Cluster, tmp_path: Path
) -> None:
    data = cluster.data_dir
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "LOG_LEVEL": "warning"}
    up = UpProcess(
        data, None, "--nats-url", cluster.urls, "--replicas", "3", "--demo",
        env=env, nats_url=cluster.urls,
    ).start(timeout=180)  # fmt: skip
    try:
        serve = ServeProcess(cluster.urls, data, environment(env))
        try:
            renter = {**env, "DANTE_PASSWORD": "demo-pass"}
            (tmp_path / "job.py").write_text(JOB)
            ran = run_dante(
                "jobs", "submit", "--json", "--script", str(tmp_path / "job.py"),
                "--max-hours", "0.1", url=cluster.urls, user="demo-user", env=renter,
            )  # fmt: skip
            assert ran.code == 0, ran
            job_id = ran.json()["job_id"]
            ran = run_dante(
                "jobs", "wait", job_id, "--timeout", "120", "--json",
                url=cluster.urls, user="demo-user", env=renter, timeout=180,
            )  # fmt: skip
            assert ran.code == 0, ran
            assert ran.json()["state"] == "completed"

            audit = run_dante("audit", "--json", "--data-dir", str(data), url=cluster.urls, env=env)
            report = json.loads(audit.out)
            assert audit.code == 0, audit
            assert report["ok"] is True and sum(report["counts"].values()) == 0
            assert report["views"]["compared"] is True

            # The log has three copies, one on each node.
            secrets = InstallationSecrets.load_or_create(data)
            nc = await connect(
                cluster.urls,
                name="test",
                credential=platform_credential(secrets.platform_password),
            )
            try:
                info = await nc.jetstream().stream_info(STREAM)
                assert info.config.num_replicas == 3
                assert info.cluster is not None and len(info.cluster.replicas or []) == 2
            finally:
                await nc.close()
        finally:
            assert serve.stop() == 0
    finally:
        assert up.stop() == 0


def _routes(server: NatsServer) -> int:
    assert server.monitor_url is not None
    with urllib.request.urlopen(f"{server.monitor_url}/routez", timeout=2) as answer:
        found: int = json.load(answer)["num_routes"]
        return found


@pytest.mark.cluster
def test_a_server_without_the_route_password_cannot_join(tmp_path: Path) -> None:
    cluster = Cluster.init(tmp_path / "data", env=environment())
    node = cluster.nodes[0]
    cluster.start(node)
    try:
        route_port = node.port + 3  # Cluster.init: route ports follow the client ports
        secrets = InstallationSecrets.load_or_create(cluster.data_dir)
        for password, joins in (("wrong", False), (secrets.route_password, True)):
            with NatsServer(
                store_dir=tmp_path / f"intruder-{joins}",
                name=f"intruder-{joins}",
                monitor_port=-1,
                cluster_name="dante",
                routes=[f"nats://dante-route:{password}@127.0.0.1:{route_port}"],
            ) as intruder:
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and not _routes(intruder):
                    time.sleep(0.1)
                assert bool(_routes(intruder)) is joins
        assert "authentication error" in (cluster.data_dir / "node-1.out").read_text()
    finally:
        cluster.stop()


@pytest.mark.cluster
@pytest.mark.anyio
async def test_logins_are_answered_while_the_platforms_own_node_is_gone(
    cluster: Cluster,
) -> None:
    # `dante up` on a cluster answers the auth callout on two connections, to two nodes.
    # With the platform's main connection gone (its node killed, say), a client logging in
    # on a third node at that moment is still let in: without the spare nobody would answer
    # it, the server would refuse it, and nats-py would close that client for good.
    secrets = InstallationSecrets.load_or_create(cluster.data_dir)
    first, second, third = (node.url for node in cluster.nodes)
    password = platform_credential(secrets.platform_password)
    nc = await connect(first, name="dante-platform", forever=True, credential=password)
    spare = await connect(second, name="dante-callout", forever=True, credential=password)
    await ensure_log(nc.jetstream(), LogSettings(replicas=3))
    identity = Identity(nc, EventStore(nc), secrets.signer, spare=spare)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(identity.run)
            with anyio.fail_after(30):
                await identity.ready.wait()
            await identity.open_account("alice", "alice-pass", "renter")
            await nc.close()  # the main connection's callout is gone with it
            alice = await connect(
                third, name="alice", credential=Credential(username="alice", secret="alice-pass")
            )
            assert alice.is_connected
            await alice.close()
            tg.cancel_scope.cancel()
    finally:
        await spare.close()
        await nc.close()


def test_a_spare_connection_starts_with_another_server() -> None:
    urls = "nats://a:1,nats://b:2,nats://c:3"
    assert elsewhere_first(urls, urlparse("nats://b:2")) == "nats://c:3,nats://a:1,nats://b:2"
    assert elsewhere_first(urls, urlparse("nats://c:3")) == "nats://a:1,nats://b:2,nats://c:3"
    assert elsewhere_first("nats://a:1", urlparse("nats://a:1")) is None


@pytest.mark.cluster
def test_a_cluster_that_does_not_come_up_leaves_no_server_behind(tmp_path: Path) -> None:
    # The helper's own cleanup: its callers stop the cluster only once it has come up.
    cluster = Cluster.init(tmp_path / "data", env=environment())
    with pytest.raises(AssertionError, match="meta leader"):
        cluster.start_all(timeout=0)
    assert [node.process for node in cluster.nodes] == [None] * len(cluster.nodes)
