"""A cluster node's configuration from nats.conf, the template (dante/events/natsconf.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dante.events.natsconf import node_config, plan_nodes
from dante.events.natsd import NatsServerError, default_config

NODES = plan_nodes(
    3, ["127.0.0.1"], port=4222, cluster_port=6222, monitor_port=8222, store_root=Path("/s")
)


def _config(template: str, domain: str | None = "dante") -> str:
    return node_config(
        template,
        NODES[0],
        NODES,
        cluster_name="dante",
        env_file="nats.env",
        domain=domain,
        route_password="psecret",
    )


def test_the_shipped_nats_conf_is_the_template_and_stays_the_single_servers_file() -> None:
    template = default_config().read_text()
    text = _config(template)
    # Everything but the per-node lines is nats.conf's, unchanged.
    for line in template.splitlines():
        if not line.startswith(("server_name:", "http:", "jetstream {")):
            assert line in text
    assert "server_name: dante\n" in template  # the embedded server's own file is untouched
    assert _config(template, domain=None).count("domain:") == 0
    # Monitoring on loopback only when asked for: it has no authentication.
    assert 'http: "127.0.0.1:8222"\n' in text
    quiet = plan_nodes(
        3, ["127.0.0.1"], port=4222, cluster_port=6222, monitor_port=None, store_root=Path("/s")
    )
    unmonitored = node_config(
        template,
        quiet[0],
        quiet,
        cluster_name="dante",
        env_file="nats.env",
        domain="dante",
        route_password="psecret",
    )
    assert "\nhttp:" not in unmonitored


@pytest.mark.parametrize("line", ["server_name: dante\n", "jetstream {\n"])
def test_a_template_missing_a_per_node_line_is_refused(line: str) -> None:
    template = default_config().read_text()
    with pytest.raises(NatsServerError, match="not the expected template"):
        _config(template.replace(line, ""))
    with pytest.raises(NatsServerError, match="matches 2 lines"):
        _config(template.replace(line, line + line))
