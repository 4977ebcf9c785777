"""Where the platform is, and connecting to it with errors a person can act on."""

from __future__ import annotations

import os
from typing import Final

import nats
from nats.aio.client import Client as NATS

DEFAULT_URL: Final = "nats://127.0.0.1:4222"

#: Exit codes shared by every command.
EXIT_REJECTED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3


class Unreachable(Exception):
    """The platform's NATS server could not be reached."""


def resolve_url(explicit: str | None = None) -> str:
    """--nats-url, else DANTE_NATS_URL, else NATS_ADDRESS, else the local default."""
    return (
        explicit
        or os.environ.get("DANTE_NATS_URL")
        or os.environ.get("NATS_ADDRESS")
        or DEFAULT_URL
    )


def servers(url: str) -> list[str]:
    """A comma-separated list of URLs (a cluster) as nats-py wants it."""
    return [u.strip() for u in url.split(",") if u.strip()]


async def connect(url: str, *, name: str, forever: bool = False, **options: object) -> NATS:
    """Connect; with `forever`, keep reconnecting with backoff (services, agents)."""

    async def quiet(_: Exception) -> None:
        return None

    try:
        return await nats.connect(
            servers=servers(url),
            name=name,
            connect_timeout=3,
            allow_reconnect=True,
            max_reconnect_attempts=-1 if forever else 3,
            reconnect_time_wait=1,
            error_cb=quiet,
            **options,
        )
    except Exception as exc:
        raise Unreachable(
            f"cannot reach the platform at {url}: {exc or type(exc).__name__}"
        ) from exc
