"""A hostile client's logins, as bare NATS protocol from a chosen source address.

`raw_login` opens a TCP connection bound to `source` (any 127.x.y.z is this machine), reads
the server's INFO, sends CONNECT with a user and password and a PING, and says whether the
server answered PONG (let in) or -ERR (refused). Cheap enough to send hundreds at once,
which is what an attacker with the official clients does too.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass, field


async def raw_login(
    host: str, port: int, user: str, password: str, *, source: str, timeout: float = 10.0
) -> bool:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(0.0)  # non-blocking, for asyncio
    sock.bind((source, 0))
    writer = None
    try:
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            reader, writer = await asyncio.open_connection(sock=sock)
            info = await reader.readline()
            assert info.startswith(b"INFO "), info
            connect = {"user": user, "pass": password, "verbose": False, "pedantic": False}
            writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
            await writer.drain()
            while line := await reader.readline():
                if line.startswith(b"PONG"):
                    return True
                if line.startswith(b"-ERR"):
                    return False
            return False
    except (OSError, TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.close()
        else:
            sock.close()


@dataclass
class Tally:
    """What an attack loop did."""

    tries: int = 0
    let_in: int = 0
    refused: int = 0
    times: list[float] = field(default_factory=list)


async def hammer(
    host: str,
    port: int,
    users: list[str] | str,
    password: str,
    *,
    source: str,
    until: float | asyncio.Event,
    parallel: int,
    tally: Tally | None = None,
) -> Tally:
    """`parallel` loops of logins from `source` until `until` (a monotonic time, or an event
    set): the same user each time, or the next of `users` (random names); counted in
    `tally` (a new one unless given)."""
    tally = tally if tally is not None else Tally()
    names = iter(users) if isinstance(users, list) else None

    def going() -> bool:
        if isinstance(until, asyncio.Event):
            return not until.is_set()
        return time.monotonic() < until

    async def loop() -> None:
        while going():
            user = next(names, "nobody") if names is not None else str(users)
            started = time.monotonic()
            ok = await raw_login(host, port, user, password, source=source)
            tally.times.append(time.monotonic() - started)
            tally.tries += 1
            if ok:
                tally.let_in += 1
            else:
                tally.refused += 1

    async with asyncio.TaskGroup() as tg:
        for _ in range(parallel):
            tg.create_task(loop())
    return tally
