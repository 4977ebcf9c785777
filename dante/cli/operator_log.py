"""Reading the log as the operator: `dante replay`, `dante audit` and `dante events`.

The operator logs in with the credential `dante up` wrote for the user who started it and
reads the log with direct gets (nats.conf grants it nothing else); against a server without
logins, the connection reads with an ordered consumer like the platform's own.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from dante.client.connect import ConnectFailed, api_prefix, connect
from dante.client.credentials import operator_credential
from dante.events.store import EventStore


class LogUnavailable(Exception):
    """The log could not be opened; `exit_code` says how the command should exit."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@asynccontextmanager
async def operator_log(url: str, *, name: str) -> AsyncIterator[EventStore]:
    """The event store, read as the operator; raises `LogUnavailable`."""
    try:
        nc = await connect(url, name=name, credential="operator")
    except ConnectFailed as exc:
        raise LogUnavailable(str(exc), exc.exit_code) from None
    try:
        yield EventStore(nc, api_prefix=api_prefix(operator_credential(url)))
    finally:
        await nc.close()


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
