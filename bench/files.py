"""Time uploads and downloads of a file through the command service.

    .venv/bin/python -m bench.files [--mib 64]

The baseline is what nats-py does with the same bytes directly, in the same run: an
object-store put of the file and a get of it back. Each row reports seconds, MiB/s and the
ratio to its baseline. (nats-py 2.16's `ObjectStore.get` grows its result by concatenation,
so it slows down with the square of the size: one reason downloads read chunks directly.)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path

import nats
import structlog

from dante.client.commands import Client
from dante.client.transfer import download_results, upload_results
from dante.events.natsd import NatsServer
from dante.events.records import Append
from dante.events.store import EventStore
from dante.events.streams import ensure_log
from dante.events.subjects import FILES_BUCKET
from dante.schemas import events as ev
from dante.services.commands import CommandService
from dante.services.files import Files
from tests.factories import make, registered, submitted


async def _place(store: EventStore) -> None:
    await store.append(Append(event=registered("prv-1", "bob")))
    await store.append(Append(event=submitted("job-1", "alice")))
    await store.append(
        Append(
            event=make(
                ev.JobAssigned,
                job_id="job-1",
                attempt=1,
                provider_id="prv-1",
                provider_owner="bob",
                gpu_indices=[0],
                price=500_000,
                fee_bps=500,
                hold=5_000_000,
            )
        )
    )


async def run(work: Path, source: Path, mib: int) -> None:
    server = NatsServer(store_dir=work / "nats").start()
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream(timeout=30)
        await ensure_log(js)
        store = EventStore(nc)
        files = Files(nc)
        service = CommandService(nc, store, extensions=[files])
        await service.start()
        await _place(store)
        obs = await js.object_store(FILES_BUCKET)
        start = time.perf_counter()
        with source.open("rb") as data:
            await obs.put("bench/baseline", data)
        put_s = time.perf_counter() - start
        start = time.perf_counter()
        await obs.get("bench/baseline")
        get_s = time.perf_counter() - start

        bob, alice = Client(nc, "provider", "bob"), Client(nc, "renter", "alice")
        start = time.perf_counter()
        ref = await upload_results(bob, "prv-1", "job-1", 1, source)
        up_s = time.perf_counter() - start
        await store.append(
            Append(event=make(ev.JobCompleted, job_id="job-1", attempt=1, results=ref))
        )
        start = time.perf_counter()
        await download_results(alice, "job-1", work / "back.tar.gz")
        down_s = time.perf_counter() - start

        print(f"{mib} MiB               seconds   MiB/s   x baseline")
        for name, seconds, base in [
            ("object store put", put_s, put_s),
            ("upload_results", up_s, put_s),
            ("object store get", get_s, get_s),
            ("download_results", down_s, get_s),
        ]:
            print(f"{name:<20} {seconds:8.2f} {mib / seconds:7.0f} {seconds / base:10.1f}")
        await service.stop()
        await files.close()
    finally:
        await nc.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=64)
    mib = parser.parse_args().mib
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    work = Path(tempfile.mkdtemp(prefix="dante-bench-"))
    source = work / "results.tar.gz"
    with source.open("wb") as out:
        for _ in range(mib):
            out.write(os.urandom(1 << 20))
    asyncio.run(run(work, source, mib))


if __name__ == "__main__":
    main()
