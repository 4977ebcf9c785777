"""Connections to a nats-server from another client address, on one machine.

Every address in 127.0.0.0/8 is this machine's, but a client connecting to the server's
127.0.0.1 comes from 127.0.0.1 whatever it does (nats-py cannot bind its socket). A
`Relay` listens on a free port and forwards each connection to the server from a socket
bound to `source` (say 127.0.0.7): the real nats-server sees, and tells the auth callout,
that address. Bytes pass through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Self


class Relay:
    def __init__(self, target_host: str, target_port: int, source: str) -> None:
        self._target = (target_host, target_port)
        self._source = source
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"nats://127.0.0.1:{port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(0.0)  # non-blocking, for asyncio
            sock.bind((self._source, 0))
            await asyncio.get_running_loop().sock_connect(sock, self._target)
            up_reader, up_writer = await asyncio.open_connection(sock=sock)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
