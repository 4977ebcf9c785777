"""`--metrics-port`: a process's Prometheus metrics over HTTP (`dante up`, `dante serve`,
`dante agent run`), served by prometheus_client's own server, in a thread, from the
registry of that process."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Final

from cyclopts import Parameter

from dante.cli.options import UsageError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

DEFAULT_HOST: Final = "127.0.0.1"

MetricsPort = Annotated[
    int | None,
    Parameter(
        help="Serve Prometheus metrics over HTTP on this port (`/metrics`; 0: any free one, "
        "said at start). Default: none."
    ),
]
MetricsHost = Annotated[
    str,
    Parameter(help="The address the metrics listen on (0.0.0.0: every interface)."),
]


def check_port(port: int | None) -> None:
    """A --metrics-port that cannot be one: a usage error (exit code 2)."""
    if port is not None and not 0 <= port <= 65535:
        raise UsageError(f"--metrics-port is a port number from 0 to 65535, not {port}")


class MetricsUnavailable(Exception):
    """The metrics' port could not be listened on."""


@contextlib.contextmanager
def serving(registry: CollectorRegistry, host: str, port: int, what: str) -> Iterator[str]:
    """Serve `registry` on host:port until the block ends; yields its URL (said on stdout).
    Raises `MetricsUnavailable` (naming the port) when it cannot listen."""
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise MetricsUnavailable(
            f"the metrics cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "try another --metrics-port (0: any free one)"
        ) from None
    bound = server.server_address[1]
    url = f"http://{host}:{bound}/metrics"
    print(f"{what} metrics: {url}", flush=True)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def say_unavailable(exc: MetricsUnavailable) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 1
