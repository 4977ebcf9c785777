"""A cluster's nats-server configurations, one per node, written from the shipped nats.conf.

nats.conf is the single server's configuration and the template of a cluster's: the accounts,
the auth callout, the limits are the same everywhere. A node's configuration is that text with
two lines marked "per node" set for it (its `server_name`, and the opening of its `jetstream`
block, which gains the node's store directory and the JetStream domain), its client listen
address, its monitoring address on loopback when one is asked for (monitoring is off
otherwise, as in nats.conf: it has no authentication), an `include` of the installation's
nats.env (the secrets the text reads), and a `cluster` block: the cluster's name, the node's
route listen address, the route password every node must present, and every node's route.
Routes without the password are refused, so a process that can reach a route port cannot
join the cluster and read its traffic. nats-server presents only the credentials written in
a route's URL, so the routes carry the password: a node's configuration is as secret as
nats.env (mode 0600).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dante.events.natsd import NatsServerError

#: The route user every node presents (its password is $DANTE_ROUTE_PASSWORD, in nats.env).
ROUTE_USER: Final = "dante-route"
#: The template's lines a node changes; each must appear exactly once.
_SERVER_NAME: Final = re.compile(r"^server_name: .*$", re.MULTILINE)
_JETSTREAM: Final = re.compile(r"^jetstream \{$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Node:
    """One node of a cluster: its name, where it listens, where it keeps its store."""

    name: str
    host: str
    port: int
    cluster_port: int
    #: Its HTTP monitoring port, or None: no monitoring.
    monitor_port: int | None
    store_dir: Path
    #: Where its monitoring listens: loopback unless the operator opens it.
    monitor_host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """Where clients reach it."""
        return f"nats://{self.host}:{self.port}"

    @property
    def route(self) -> str:
        """Where the other nodes reach it."""
        return f"nats://{self.host}:{self.cluster_port}"


def plan_nodes(
    count: int,
    hosts: list[str],
    *,
    port: int,
    cluster_port: int,
    monitor_port: int | None,
    store_root: Path,
    monitor_host: str = "127.0.0.1",
) -> list[Node]:
    """`count` nodes named node-1 … node-N. One host for all (one machine): each node's ports
    are the given ones plus its index (4222, 4223, 4224); one host per node (a machine each):
    every node has the given ports. Raises `ValueError` on a plan that cannot work."""
    if count < 1:
        raise ValueError(f"a cluster has at least one node, not {count}")
    if len(hosts) not in (1, count):
        raise ValueError(
            f"give one host for every node, or one per node: {len(hosts)} hosts for {count} nodes"
        )
    one_machine = len(hosts) == 1
    nodes = []
    for index in range(count):
        step = index if one_machine else 0
        ports = (port + step, cluster_port + step)
        monitor = None if monitor_port is None else monitor_port + step
        wanted = ports if monitor is None else (*ports, monitor)
        if not all(0 < p <= 65535 for p in wanted):
            raise ValueError(f"node-{index + 1}'s ports {wanted} are not all from 1 to 65535")
        nodes.append(
            Node(
                name=f"node-{index + 1}",
                host=hosts[0] if one_machine else hosts[index],
                port=ports[0],
                cluster_port=ports[1],
                monitor_port=monitor,
                store_dir=store_root / f"node-{index + 1}",
                monitor_host=monitor_host,
            )
        )
    if one_machine:
        used = [
            p
            for node in nodes
            for p in (node.port, node.cluster_port, node.monitor_port)
            if p is not None
        ]
        if len(set(used)) != len(used):
            raise ValueError(
                f"on one host the nodes' ports overlap ({sorted(used)}): keep --port, "
                "--cluster-port and --monitor-port at least the node count apart"
            )
    return nodes


def _quoted(text: str) -> str:
    # nats-server reads a JSON string literal as a quoted string.
    return json.dumps(text)


def _replace_once(pattern: re.Pattern[str], template: str, replacement: str) -> str:
    text, count = pattern.subn(lambda _: replacement, template)
    if count != 1:
        raise NatsServerError(
            f"nats.conf is not the expected template: {pattern.pattern!r} matches {count} "
            "lines, not one"
        )
    return text


def node_config(
    template: str,
    node: Node,
    nodes: list[Node],
    *,
    cluster_name: str,
    env_file: str,
    domain: str | None,
    route_password: str,
) -> str:
    """The configuration of `node` in a cluster of `nodes`, from the text of nats.conf;
    `env_file`: the path of the installation's nats.env, as the node will see it (relative
    paths are read from the configuration's folder)."""
    header = (
        f"# {node.name} of the cluster {cluster_name!r}, written by `dante cluster init` from "
        "nats.conf.\n"
        f"# Start it with: nats-server -c {node.name}.conf\n\n"
    )
    monitoring = (
        ""
        if node.monitor_port is None
        else f"http: {_quoted(f'{node.monitor_host}:{node.monitor_port}')}\n"
    )
    text = _replace_once(
        _SERVER_NAME,
        template,
        f"server_name: {_quoted(node.name)}\n"
        f"listen: {_quoted(f'{node.host}:{node.port}')}\n"
        f"{monitoring}"
        "# The installation's secrets (the callout's issuer key, the passwords), read from\n"
        "# their own file so that this one holds none.\n"
        f"include {_quoted(env_file)}",
    )
    opening = f"jetstream {{\n  store_dir: {_quoted(str(node.store_dir))}"
    if domain:
        opening += f"\n  domain: {_quoted(domain)}"
    text = _replace_once(_JETSTREAM, text, opening)
    credentials = f"{ROUTE_USER}:{route_password}@"
    routes = "".join(
        f"    {_quoted(peer.route.replace('://', '://' + credentials, 1))}\n" for peer in nodes
    )
    cluster = (
        "\n# ── The cluster ──────────────────────────────────────────────────────────────────\n"
        "# Every node lists every route (its own is skipped); a node that restarts finds the\n"
        "# others there. Routes authenticate with the route password (as in nats.env).\n"
        "cluster {\n"
        f"  name: {_quoted(cluster_name)}\n"
        f"  listen: {_quoted(f'{node.host}:{node.cluster_port}')}\n"
        "  authorization {\n"
        f"    user: {ROUTE_USER}\n"
        "    password: $DANTE_ROUTE_PASSWORD\n"
        "  }\n"
        "  routes: [\n"
        f"{routes}"
        "  ]\n"
        "}\n"
    )
    return header + text.rstrip("\n") + "\n" + cluster
