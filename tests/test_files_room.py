"""Files can never take the room the log needs: `dante_files` has its own limit, reserved
out of the server's file store, and a file beyond it is refused while the log appends on."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import APIError, ObjectNotFoundError

from dante.client.commands import Client, CommandError
from dante.client.transfer import upload_input
from dante.domain.model import World
from dante.events.natsd import NatsServer
from dante.events.records import Append
from dante.events.store import EventStore
from dante.events.streams import LogSettings, ensure_log
from dante.events.subjects import FILES_BUCKET
from dante.services.commands import CommandService
from dante.services.files import Files
from dante.services.files.inputs import InputLedger, InputSweeper
from tests.factories import deposit, submitted

pytestmark = pytest.mark.anyio
FILES = f"OBJ_{FILES_BUCKET}"


async def test_the_files_bucket_has_its_own_room_by_default(nc: NATS) -> None:
    js = nc.jetstream()
    await ensure_log(js)
    info = await js.stream_info(FILES)
    assert info.config.max_bytes == LogSettings().files_max_bytes == 10 << 30


async def test_a_bucket_made_without_a_limit_gets_one(nc: NATS) -> None:
    js = nc.jetstream()
    # As a platform made before the limit had it.
    await js.create_object_store(
        FILES_BUCKET,
        config=ObjectStoreConfig(description="Job inputs and results", storage=StorageType.FILE),
    )
    assert (await js.stream_info(FILES)).config.max_bytes == -1
    await ensure_log(js, LogSettings(files_max_bytes=1 << 20))
    assert (await js.stream_info(FILES)).config.max_bytes == 1 << 20


async def test_a_file_beyond_the_room_is_refused_and_the_log_appends_on(nc: NATS) -> None:
    js = nc.jetstream()
    await ensure_log(js, LogSettings(files_max_bytes=1 << 20))
    files = await js.object_store(FILES_BUCKET)
    with pytest.raises(APIError):
        await files.put("inputs/mallory/x/big.bin", io.BytesIO(b"\0" * (2 << 20)))
    store = EventStore(nc)
    seq = (await store.append(Append(event=deposit("alice", 5)))).last
    assert seq >= 1


async def test_an_upload_that_would_not_fit_is_refused_and_stores_nothing(
    nc: NATS, tmp_path: Path
) -> None:
    js = nc.jetstream()
    await ensure_log(js, LogSettings(files_max_bytes=1 << 20))
    files = Files(nc, scratch_dir=tmp_path)
    service = CommandService(nc, EventStore(nc), extensions=[files])
    await service.start()
    try:
        source = tmp_path / "big.bin"
        source.write_bytes(b"\1" * (3 << 19))  # 1.5 MiB into 1 MiB of room
        with pytest.raises(CommandError) as refused:
            await upload_input(Client(nc, "renter", "mallory"), source, "big.bin")
        assert refused.value.code == "quota_exceeded"
        assert "no room for 1572864 bytes" in str(refused.value)
        assert (await js.stream_info(FILES)).state.bytes == 0
        # A file that fits is stored.
        small = tmp_path / "small.bin"
        small.write_bytes(b"\2" * 1000)
        ref = await upload_input(Client(nc, "renter", "alice"), small, "small.bin")
        assert ref.size == 1000
    finally:
        await service.stop()
        await files.close()


async def test_a_renters_stored_inputs_have_a_quota(nc: NATS, tmp_path: Path) -> None:
    await ensure_log(nc.jetstream())
    files = Files(nc, scratch_dir=tmp_path, input_quota_bytes=3000)
    service = CommandService(nc, EventStore(nc), extensions=[files])
    await service.start()
    try:
        source = tmp_path / "two-k.bin"
        source.write_bytes(b"\3" * 2000)
        mallory = Client(nc, "renter", "mallory")
        await upload_input(mallory, source, "a.bin")
        with pytest.raises(CommandError) as refused:
            await upload_input(mallory, source, "b.bin")
        assert refused.value.code == "quota_exceeded"
        assert "take 2000 bytes; 2000 more would pass its quota of 3000" in str(refused.value)
        # The quota is mallory's: alice stores hers.
        await upload_input(Client(nc, "renter", "alice"), source, "a.bin")
        assert await InputLedger(nc.jetstream()).used("mallory") == 2000
    finally:
        await service.stop()
        await files.close()


async def test_inputs_no_live_job_names_expire(nc: NATS, tmp_path: Path) -> None:
    js = nc.jetstream()
    await ensure_log(js)
    files = Files(nc, scratch_dir=tmp_path)
    service = CommandService(nc, EventStore(nc), extensions=[files])
    await service.start()
    try:
        source = tmp_path / "in.bin"
        source.write_bytes(b"\4" * 100)
        alice = Client(nc, "renter", "alice")
        named = await upload_input(alice, source, "named.bin")
        loose = await upload_input(alice, source, "loose.bin")
    finally:
        await service.stop()
        await files.close()
    world = World()
    job = msgspec.structs.replace(submitted("job-1", "alice"), inputs=[named])
    world.apply_event(job, 1)
    now = datetime.now(UTC)
    sweeper = InputSweeper(js, lambda: world, ttl_s=3600, clock=lambda: now)
    assert await sweeper.sweep() == []  # nothing is old enough yet
    now += timedelta(hours=2)
    assert await sweeper.sweep() == [loose.object]
    bucket = await js.object_store(FILES_BUCKET)
    assert (await bucket.get_info(named.object)).size == 100
    with pytest.raises(ObjectNotFoundError):
        await bucket.get_info(loose.object)
    assert await InputLedger(js).used("alice") == 100


async def test_every_start_sets_the_log_up_again_within_the_servers_file_store(
    tmp_path: Path,
) -> None:
    # Room for the reserved limits (1 GiB output, 4 GiB uploads, 10 GiB files) once: a
    # second start must not ask for the files' room again.
    config = tmp_path / "small.conf"
    config.write_text("jetstream { max_file_store: 16GB }\n")
    with NatsServer(store_dir=tmp_path / "s", config=config) as server:
        nc = await nats.connect(server.url)
        try:
            for _ in range(3):
                await ensure_log(nc.jetstream())
            info = await nc.jetstream().stream_info(FILES)
            assert info.config.max_bytes == 10 << 30
        finally:
            await nc.close()
