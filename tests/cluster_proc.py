"""A three-node cluster as an operator runs it: `dante cluster init`, then one
`nats-server -c node-N.conf` process per node, killed and restarted as real processes."""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

NODES = 3


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports."""
    for _ in range(200):
        first = random.randint(20_000, 60_000)
        if all(_free(first + i) for i in range(count)):
            return first
    raise AssertionError("no run of free ports")


def dante(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dante", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"dante {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


@dataclass
class Node:
    name: str
    config: Path
    port: int
    monitor_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def jsz(self, query: str = "") -> dict[str, object]:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.monitor_port}/jsz{query}", timeout=2
        ) as answer:
            found: dict[str, object] = json.load(answer)
            return found


@dataclass
class Cluster:
    """The nodes `dante cluster init` configured in `data_dir`, as nats-server processes."""

    data_dir: Path
    server: str
    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def init(cls, data_dir: Path, env: dict[str, str] | None = None) -> Cluster:
        first = free_ports(3 * NODES)
        dante(
            "cluster", "init", "--out", str(data_dir), "--nodes", str(NODES),
            "--port", str(first), "--cluster-port", str(first + NODES),
            "--monitor-port", str(first + 2 * NODES),
            env=env,
        )  # fmt: skip
        server = dante("cluster", "server-path", env=env).strip()
        nodes = [
            Node(f"node-{i + 1}", data_dir / f"node-{i + 1}.conf", first + i, first + 2 * NODES + i)
            for i in range(NODES)
        ]
        return cls(data_dir, server, nodes)

    @property
    def urls(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def start(self, node: Node) -> None:
        log = (self.data_dir / f"{node.name}.out").open("ab")
        node.process = subprocess.Popen(
            [self.server, "-c", str(node.config)], stdout=log, stderr=log
        )
        log.close()

    def start_all(self, timeout: float = 60) -> None:
        """Start every node and wait for the meta leader; a cluster that does not come up
        is stopped again (its callers' cleanup starts only after this returns)."""
        try:
            for node in self.nodes:
                self.start(node)
            self.wait_for_meta_leader(timeout)
        except BaseException:
            self.stop()
            raise

    def wait_for_meta_leader(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                meta = self.nodes[0].jsz()["meta_cluster"]
                assert isinstance(meta, dict) and meta.get("leader")
                # Every peer heard from, as the leader sees them (only the leader knows): one
                # it still counts offline may make it refuse to place a three-copy stream
                # (the platform tries again, but the scenarios time their steps from here).
                leader = self.node(str(meta["leader"])).jsz()["meta_cluster"]
                assert isinstance(leader, dict)
                peers = leader.get("replicas") or []
                if len(peers) == NODES - 1 and all(
                    peer.get("current") and not peer.get("offline") for peer in peers
                ):
                    return
            except (OSError, KeyError, AssertionError):
                pass
            time.sleep(0.2)
        raise AssertionError("the cluster elected no meta leader, or one not hearing every node")

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def kill(self, node: Node, sig: int = signal.SIGKILL) -> None:
        """kill -9 (as a crashed machine), or another signal (SIGTERM: an orderly stop)."""
        assert node.process is not None
        node.process.send_signal(sig)
        node.process.wait()
        node.process = None

    def elections(self, stream: str) -> list[float]:
        """When (Unix time) any node said it became the leader of `stream`, from the nodes'
        logs (nats-server writes local time)."""
        said = f"JetStream cluster new stream leader for 'DANTE > {stream}'"
        found = []
        for node in self.nodes:
            log = self.data_dir / f"{node.name}.out"
            for line in log.read_text(errors="replace").splitlines():
                if said in line:
                    stamp = " ".join(line.split()[1:3])
                    local = datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f")  # noqa: DTZ007
                    found.append(local.timestamp())
        return sorted(found)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                node.process.terminate()
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(10)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()
                node.process = None


class ServeProcess:
    """`dante serve handlers --nats-url … --replicas 3 --data-dir …`, until it says ready."""

    def __init__(self, urls: str, data_dir: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dante", "serve", "handlers", "--nats-url", urls,
             "--replicas", "3", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )  # fmt: skip
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip() == "ready":
                return
        raise AssertionError("dante serve handlers did not become ready")

    def stop(self) -> int:
        self.process.terminate()
        self.process.communicate(timeout=30)
        return self.process.returncode
