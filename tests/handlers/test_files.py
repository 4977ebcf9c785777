"""Job output and file transfer through the command service, against a real nats-server."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError

from dante.client.commands import Client, CommandError, new_command_id
from dante.client.transfer import (
    TransferError,
    download_results,
    fetch_input,
    read_logs,
    send_output,
    upload_input,
    upload_results,
)
from dante.events.natsd import NatsServer
from dante.events.records import Append
from dante.events.store import EventStore
from dante.events.subjects import OUTPUT_STREAM, UPLOAD_PREFIX, UPLOAD_STREAM
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.schemas.results import ChunkResult, LogPage, UploadResult
from dante.schemas.values import FileRef
from dante.services.commands import CommandService
from dante.services.files import Files
from dante.services.files.objects import Objects
from tests.factories import NOW, make, registered, submitted
from tests.handlers.conftest import Clock

pytestmark = pytest.mark.anyio

CHUNK = cmd.CHUNK_BYTES


@pytest.fixture
async def files(nc: NATS) -> AsyncIterator[Files]:
    extension = Files(nc)
    try:
        yield extension
    finally:
        await extension.close()


@pytest.fixture
async def service(
    nc: NATS, store: EventStore, clock: Clock, files: Files
) -> AsyncIterator[CommandService]:
    """The command service with the files extension (replaces the plain one here)."""
    svc = CommandService(nc, store, clock=clock, extensions=[files])
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


@pytest.fixture
def alice(as_) -> Client:
    client: Client = as_("renter", "alice")
    return client


@pytest.fixture
def bob(as_) -> Client:
    client: Client = as_("provider", "bob")
    return client


async def place(
    store: EventStore,
    job_id: str = "job-1",
    *,
    renter: str = "alice",
    provider_id: str = "prv-1",
    owner: str = "bob",
    attempt: int = 1,
    inputs: list[FileRef] | None = None,
) -> None:
    """A registered provider and a job of `renter` running there as `attempt`."""
    await store.append(Append(event=registered(provider_id, owner)))
    job = submitted(job_id, renter)
    if inputs:
        job = msgspec.structs.replace(job, inputs=inputs)
    await store.append(Append(event=job))
    await store.append(
        Append(
            event=make(
                ev.JobAssigned,
                job_id=job_id,
                attempt=attempt,
                provider_id=provider_id,
                provider_owner=owner,
                gpu_indices=[0],
                price=500_000,
                fee_bps=500,
                hold=5_000_000,
            )
        )
    )
    await store.append(Append(event=make(ev.JobStarted, job_id=job_id, attempt=attempt)))


async def complete(
    store: EventStore, job_id: str = "job-1", results: FileRef | None = None, attempt: int = 1
) -> None:
    await store.append(
        Append(event=make(ev.JobCompleted, job_id=job_id, attempt=attempt, results=results))
    )


def lines(*texts: str) -> list[cmd.OutputLine]:
    return [
        cmd.OutputLine(at=NOW + timedelta(seconds=n), stream="stdout", text=text)
        for n, text in enumerate(texts)
    ]


async def refused(client: Client, command: cmd.Command[Any]) -> CommandError:
    with pytest.raises(CommandError) as info:
        await client.send(command)
    return info.value


async def stored_messages(nc: NATS, stream: str, subject: str | None = None) -> int:
    info = await nc.jetstream().stream_info(stream, subjects_filter=subject)
    if subject is None:
        return int(info.state.messages)
    return sum((info.state.subjects or {}).values())


async def answering(nc: NATS) -> None:
    """Wait until a command service answers on `nc`'s server.

    nats-py 2.16's `flush()` is no barrier for subscriptions: it writes its PING ahead of
    commands still queued for its flusher task, so a service started on another connection
    may not be subscribed yet when `flush()` returns.
    """
    probe = msgspec.json.encode(cmd.GetJobLogs(job_id="job-probe"))
    for _ in range(200):
        try:
            await nc.request("dante.cmd.renter.alice.logs", probe, timeout=2)
        except NoRespondersError:
            await asyncio.sleep(0.01)
        else:
            return
    raise AssertionError("no command service answers")


def payload(size: int, seed: int = 1) -> bytes:
    return hashlib.shake_256(f"dante-{seed}".encode()).digest(size)


def chunk(
    offset: int, data: bytes, *, final: bool = False, whole: bytes | None = None, **ids: Any
) -> cmd.UploadResults:
    fields: dict[str, Any] = {"provider_id": "prv-1", "job_id": "job-1", "attempt": 1} | ids
    if final:
        assert whole is not None
        fields |= {"size": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}
    return cmd.UploadResults(
        command_id=new_command_id(), offset=offset, data=data, final=final, **fields
    )


# ── output ──────────────────────────────────────────────────────────────────────────────


async def test_output_is_read_back_in_order_by_pages(
    alice: Client, bob: Client, store: EventStore
) -> None:
    await place(store)
    sent = [f"line {n}" for n in range(12)]
    for batch in (sent[:5], sent[5:8], sent[8:]):
        assert await send_output(bob, "prv-1", "job-1", 1, lines(*batch)) == len(batch)

    read: list[str] = []
    after = 0
    pages = 0
    while True:
        page = await read_logs(alice, "job-1", after, limit=4)
        assert len(page.lines) <= 4 and not page.ended
        if not page.lines:
            assert page.next == after
            break
        read += [line.text for line in page.lines]
        assert {line.attempt for line in page.lines} == {1}
        after = page.next
        pages += 1
    assert read == sent and pages == 3

    await complete(store)
    page = await read_logs(alice, "job-1", after)
    assert (page.lines, page.ended) == ([], True)
    # From the start again, in one page.
    page = await read_logs(alice, "job-1")
    assert [line.text for line in page.lines] == sent and page.ended


async def test_lines_sent_after_the_attempt_ended_still_arrive(
    alice: Client, bob: Client, store: EventStore
) -> None:
    await place(store)
    await send_output(bob, "prv-1", "job-1", 1, lines("working"))
    await complete(store)
    await send_output(bob, "prv-1", "job-1", 1, lines("last words"))
    page = await read_logs(alice, "job-1")
    assert [line.text for line in page.lines] == ["working", "last words"] and page.ended


async def test_a_batch_sent_again_is_stored_once(
    alice: Client, bob: Client, store: EventStore, nc: NATS
) -> None:
    await place(store)
    command = cmd.RecordOutput(
        command_id=new_command_id(),
        provider_id="prv-1",
        job_id="job-1",
        attempt=1,
        lines=lines("a", "b"),
    )
    await bob.send(command)
    await bob.send(command)
    assert await stored_messages(nc, OUTPUT_STREAM) == 1
    assert [line.text for line in (await read_logs(alice, "job-1")).lines] == ["a", "b"]


async def test_only_the_provider_running_the_attempt_writes_its_output(
    as_, bob: Client, store: EventStore, nc: NATS
) -> None:
    await place(store)
    await store.append(Append(event=registered("prv-2", "bob")))
    await store.append(Append(event=registered("prv-e", "eve")))
    eve = as_("provider", "eve")

    def record(provider_id: str = "prv-1", attempt: int = 1, job_id: str = "job-1") -> Any:
        return cmd.RecordOutput(
            command_id=new_command_id(),
            provider_id=provider_id,
            job_id=job_id,
            attempt=attempt,
            lines=lines("forged"),
        )

    error = await refused(eve, record())
    assert (error.code, error.info.field) == ("not_your_provider", "provider_id")
    error = await refused(eve, record("prv-e"))
    assert (error.code, error.info.field) == ("unknown_job", "job_id")
    error = await refused(bob, record("prv-2"))
    assert error.code == "unknown_job"
    error = await refused(bob, record(attempt=2))
    assert error.code == "wrong_state"
    error = await refused(bob, record(job_id="job-zz"))
    assert error.code == "unknown_job"
    error = await refused(bob, record("prv-zz"))
    assert error.code == "unknown_provider"
    assert await stored_messages(nc, OUTPUT_STREAM) == 0


async def test_other_renters_see_neither_output_nor_results(
    as_, alice: Client, bob: Client, store: EventStore, tmp_path: Path
) -> None:
    await place(store)
    await send_output(bob, "prv-1", "job-1", 1, lines("secret sauce"))
    source = tmp_path / "out.tar.gz"
    source.write_bytes(b"private results")
    ref = await upload_results(bob, "prv-1", "job-1", 1, source)
    await complete(store, results=ref)
    carol = as_("renter", "carol")
    for command in (cmd.GetJobLogs(job_id="job-1"), cmd.DownloadResults(job_id="job-1")):
        error = await refused(carol, command)
        assert (error.code, error.info.field) == ("unknown_job", "job_id")
        assert error.info.message == "you have no job job-1"
        text = msgspec.json.encode(error.info).decode()
        assert "alice" not in text and "secret" not in text and "results/" not in text
    error = await refused(carol, cmd.GetJobLogs(job_id="job-nope"))
    assert error.code == "unknown_job"
    # The renter herself gets both.
    assert (await read_logs(alice, "job-1")).lines[0].text == "secret sauce"
    await download_results(alice, "job-1", tmp_path / "mine.tar.gz")
    assert (tmp_path / "mine.tar.gz").read_bytes() == b"private results"


# ── uploads and downloads ───────────────────────────────────────────────────────────────


async def test_results_round_trip_byte_for_byte(
    alice: Client, bob: Client, store: EventStore, tmp_path: Path
) -> None:
    await place(store)
    data = payload(2 * CHUNK + CHUNK // 2 + 7)
    source = tmp_path / "results.tar.gz"
    source.write_bytes(data)
    error = await refused(alice, cmd.DownloadResults(job_id="job-1"))
    assert error.code == "wrong_state" and "no results yet" in error.info.message

    ref = await upload_results(bob, "prv-1", "job-1", 1, source)
    assert ref == FileRef(
        object="results/job-1/1.tar.gz",
        path="results.tar.gz",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    await complete(store, results=ref)
    seen: list[tuple[int, int]] = []
    dest = tmp_path / "downloaded.tar.gz"
    got = await download_results(
        alice, "job-1", dest, progress=lambda done, total: seen.append((done, total))
    )
    assert dest.read_bytes() == data
    assert (got.object, got.size, got.sha256) == (ref.object, ref.size, ref.sha256)
    assert seen[-1] == (len(data), len(data)) and len(seen) == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []

    # Any offset can be asked for; past the end is refused.
    middle = await alice.send(cmd.DownloadResults(job_id="job-1", offset=CHUNK + 3), ChunkResult)
    assert middle.data == data[CHUNK + 3 : 2 * CHUNK + 3] and not middle.done
    error = await refused(alice, cmd.DownloadResults(job_id="job-1", offset=len(data) + 1))
    assert (error.code, error.info.field) == ("invalid", "offset")


async def test_an_empty_file_round_trips(
    alice: Client, bob: Client, store: EventStore, tmp_path: Path
) -> None:
    await place(store)
    (tmp_path / "empty").write_bytes(b"")
    ref = await upload_results(bob, "prv-1", "job-1", 1, tmp_path / "empty")
    assert ref.size == 0
    await complete(store, results=ref)
    await download_results(alice, "job-1", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == b""


async def test_the_chunks_of_one_upload_may_reach_different_instances(
    nats_server: NatsServer,
    nc: NATS,
    store: EventStore,
    clock: Clock,
    bob: Client,
    service: CommandService,
) -> None:
    await place(store)
    await service.stop()
    data = payload(3 * CHUNK + 100, seed=2)
    pieces = [data[at : at + CHUNK] for at in range(0, len(data), CHUNK)]
    other = await nats.connect(nats_server.url)
    instances = [Files(nc), Files(other)]
    stores = [store, EventStore(other)]
    live: CommandService | None = None

    async def only(n: int) -> None:
        """Leave instance `n` alone in the queue group (each time a fresh service)."""
        nonlocal live
        if live is not None:
            await live.stop()
        connection = [nc, other][n]
        live = CommandService(connection, stores[n], clock=clock, extensions=[instances[n]])
        await live.start()
        await answering(nc)

    try:
        for n, piece in enumerate(pieces):
            await only(n % 2)
            last = n == len(pieces) - 1
            result = await bob.send(chunk(n * CHUNK, piece, final=last, whole=data), UploadResult)
            assert result.received == min((n + 1) * CHUNK, len(data))
        assert result.file is not None
        # The final chunk, sent again to the other instance, gets the same answer.
        await only(0)
        again = await bob.send(chunk(3 * CHUNK, pieces[-1], final=True, whole=data), UploadResult)
        assert again.file == result.file
        stored = await Objects(nc, nc.jetstream()).info(result.file.object)
        assert stored is not None and stored.sha256 == hashlib.sha256(data).hexdigest()
        assert await stored_messages(nc, UPLOAD_STREAM) == 0  # staging is cleaned up
    finally:
        if live is not None:
            await live.stop()
        for instance in instances:
            await instance.close()
        await other.close()


async def test_a_chunk_sent_again_is_stored_once(
    alice: Client, bob: Client, store: EventStore, nc: NATS, tmp_path: Path
) -> None:
    await place(store)
    data = payload(CHUNK + 10, seed=3)
    first = chunk(0, data[:CHUNK])
    assert (await bob.send(first, UploadResult)).received == CHUNK
    assert (await bob.send(first, UploadResult)).received == CHUNK
    # The same bytes under a new command id: still the same chunk.
    assert (await bob.send(chunk(0, data[:CHUNK]), UploadResult)).received == CHUNK
    key = f"{UPLOAD_PREFIX}.results.bob.job-1.1.chunk"
    assert await stored_messages(nc, UPLOAD_STREAM, key) == 1
    final = chunk(CHUNK, data[CHUNK:], final=True, whole=data)
    result = await bob.send(final, UploadResult)
    assert (await bob.send(final, UploadResult)).file == result.file
    await complete(store, results=result.file)
    await download_results(alice, "job-1", tmp_path / "r")
    assert (tmp_path / "r").read_bytes() == data


async def test_gaps_and_changed_chunks_are_refused(bob: Client, store: EventStore) -> None:
    await place(store)
    data = payload(3 * CHUNK, seed=4)
    await bob.send(chunk(0, data[:CHUNK]))
    error = await refused(bob, chunk(2 * CHUNK, data[2 * CHUNK :]))
    assert (error.code, error.info.field) == ("invalid", "offset")
    assert f"continues at offset {CHUNK}" in error.info.message
    await bob.send(chunk(CHUNK, data[CHUNK : 2 * CHUNK]))
    error = await refused(bob, chunk(CHUNK, payload(CHUNK, seed=99)))
    assert (error.code, error.info.field) == ("invalid", "offset")
    # Offset 0 with other bytes starts the upload over.
    fresh = payload(100, seed=5)
    result = await bob.send(chunk(0, fresh, final=True, whole=fresh), UploadResult)
    assert result.file is not None and result.file.size == 100


async def test_a_wrong_digest_is_refused_and_nothing_is_stored(
    bob: Client, store: EventStore, nc: NATS
) -> None:
    await place(store)
    data = payload(CHUNK + 5, seed=6)
    await bob.send(chunk(0, data[:CHUNK]))
    bad = cmd.UploadResults(
        command_id=new_command_id(),
        provider_id="prv-1",
        job_id="job-1",
        attempt=1,
        offset=CHUNK,
        data=data[CHUNK:],
        final=True,
        size=len(data),
        sha256="0" * 64,
    )
    error = await refused(bob, bad)
    assert (error.code, error.info.field) == ("invalid", "sha256")
    assert "nothing was stored" in error.info.message
    assert await Objects(nc, nc.jetstream()).info("results/job-1/1.tar.gz") is None
    # Sent again, it gets the same refusal.
    again = await refused(bob, bad)
    assert again.info == error.info
    # The staged chunks are gone: the file must be sent again from offset 0.
    error = await refused(bob, chunk(CHUNK, data[CHUNK:], final=True, whole=data))
    assert (error.code, error.info.field) == ("invalid", "offset")
    # A size that is not what arrived is refused too.
    short = msgspec.structs.replace(bad, offset=0, data=data[:100], size=101)
    error = await refused(bob, short)
    assert (error.code, error.info.field) == ("invalid", "size")
    assert "100 bytes arrived" in error.info.message


async def test_only_the_provider_that_ran_the_attempt_uploads_its_results(
    as_, bob: Client, store: EventStore, nc: NATS
) -> None:
    await place(store)
    await store.append(Append(event=registered("prv-e", "eve")))
    eve = as_("provider", "eve")
    error = await refused(eve, chunk(0, b"x"))
    assert error.code == "not_your_provider"
    error = await refused(eve, chunk(0, b"x", provider_id="prv-e"))
    assert error.code == "unknown_job"
    error = await refused(bob, chunk(0, b"x", attempt=2))
    assert error.code == "wrong_state"
    assert await stored_messages(nc, UPLOAD_STREAM) == 0


async def test_recorded_results_are_not_replaced(
    bob: Client, store: EventStore, tmp_path: Path
) -> None:
    await place(store)
    (tmp_path / "a").write_bytes(b"first")
    ref = await upload_results(bob, "prv-1", "job-1", 1, tmp_path / "a")
    # Before the log names them, a new upload replaces them (an agent that restarted).
    (tmp_path / "b").write_bytes(b"second")
    ref = await upload_results(bob, "prv-1", "job-1", 1, tmp_path / "b")
    await complete(store, results=ref)
    assert await upload_results(bob, "prv-1", "job-1", 1, tmp_path / "b") == ref
    (tmp_path / "c").write_bytes(b"third")
    with pytest.raises(CommandError) as info:
        await upload_results(bob, "prv-1", "job-1", 1, tmp_path / "c")
    assert info.value.code == "wrong_state" and "already recorded" in info.value.info.message


async def test_uploads_have_a_size_limit(
    nc: NATS, store: EventStore, clock: Clock, bob: Client, service: CommandService, tmp_path: Path
) -> None:
    await place(store)
    small = Files(nc, max_results_bytes=1000)
    await service.stop()  # leave the instance with the small limit alone in the group
    svc = CommandService(nc, store, clock=clock, extensions=[small])
    await svc.start()
    try:
        (tmp_path / "big").write_bytes(payload(1001))
        with pytest.raises(CommandError) as info:
            await upload_results(bob, "prv-1", "job-1", 1, tmp_path / "big")
        assert info.value.code == "invalid" and "at most 1000 bytes" in info.value.info.message
    finally:
        await svc.stop()
        await small.close()


async def test_a_slow_assembly_is_collected_by_sending_the_final_chunk_again(
    nc: NATS, store: EventStore, clock: Clock, bob: Client, service: CommandService, tmp_path: Path
) -> None:
    await place(store)
    patient = Files(nc, answer_within=0)
    await service.stop()
    svc = CommandService(nc, store, clock=clock, extensions=[patient])
    await svc.start()
    try:
        data = payload(CHUNK + 1, seed=7)
        await bob.send(chunk(0, data[:CHUNK]))
        error = await refused(bob, chunk(CHUNK, data[CHUNK:], final=True, whole=data))
        assert error.code == "unavailable" and "being assembled" in error.info.message
        (tmp_path / "r").write_bytes(data)
        ref = await upload_results(bob, "prv-1", "job-1", 1, tmp_path / "r")
        assert ref.sha256 == hashlib.sha256(data).hexdigest()
    finally:
        await svc.stop()
        await patient.close()


# ── inputs ──────────────────────────────────────────────────────────────────────────────


async def test_inputs_reach_the_provider_running_the_job(
    as_, alice: Client, bob: Client, store: EventStore, tmp_path: Path
) -> None:
    data = payload(CHUNK + 3, seed=8)
    (tmp_path / "data.bin").write_bytes(data)
    ref = await upload_input(alice, tmp_path / "data.bin", "data/train.bin")
    assert ref.path == "data/train.bin" and ref.object.startswith("inputs/alice/")
    assert ref.object.endswith("/data/train.bin") and ref.size == len(data)
    other = FileRef(
        object="inputs/alice/elsewhere/x", path="x", size=1, sha256=hashlib.sha256(b"").hexdigest()
    )
    await place(store, inputs=[ref])

    await fetch_input(bob, "prv-1", "job-1", ref, tmp_path / "fetched.bin")
    assert (tmp_path / "fetched.bin").read_bytes() == data
    # The agent checks what arrives against the job's ref, and keeps nothing that differs.
    forged = msgspec.structs.replace(ref, sha256="1" * 64)
    with pytest.raises(TransferError):
        await fetch_input(bob, "prv-1", "job-1", forged, tmp_path / "forged.bin")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".forged", "forged"))]

    def fetch(object_: str = ref.object, provider_id: str = "prv-1") -> cmd.FetchInput:
        return cmd.FetchInput(provider_id=provider_id, job_id="job-1", object=object_)

    error = await refused(bob, fetch(other.object))
    assert (error.code, error.info.field) == ("forbidden", "object")
    await store.append(Append(event=registered("prv-2", "bob")))
    error = await refused(bob, fetch(provider_id="prv-2"))
    assert error.code == "unknown_job"
    await store.append(Append(event=registered("prv-e", "eve")))
    eve = as_("provider", "eve")
    error = await refused(eve, fetch())
    assert error.code == "not_your_provider"
    error = await refused(eve, fetch(provider_id="prv-e"))
    assert (error.code, error.info.message) == ("unknown_job", "you have no job job-1")
    await complete(store)
    error = await refused(bob, fetch())
    assert error.code == "job_finished"


async def test_a_job_cannot_name_another_renters_upload(
    as_, bob: Client, store: EventStore, tmp_path: Path
) -> None:
    carol = as_("renter", "carol")
    (tmp_path / "secret").write_bytes(b"carol's data")
    ref = await upload_input(carol, tmp_path / "secret", "secret")
    await place(store, renter="alice", inputs=[ref])
    error = await refused(
        bob, cmd.FetchInput(provider_id="prv-1", job_id="job-1", object=ref.object)
    )
    assert error.code == "forbidden" and "was not uploaded by the renter" in error.info.message


async def test_input_paths_stay_inside_the_job_folder(alice: Client, tmp_path: Path) -> None:
    for path in ("../escape", "/etc/passwd", "a/../../b", "a//b"):
        command = cmd.UploadInput(
            command_id=new_command_id(),
            upload_id="upload-0001",
            path=path,
            offset=0,
            data=b"x",
            final=True,
            size=1,
            sha256=hashlib.sha256(b"x").hexdigest(),
        )
        error = await refused(alice, command)
        assert (error.code, error.info.field) == ("invalid", "path")
    with pytest.raises(ValueError, match="relative"):
        await upload_input(alice, tmp_path, "/abs")


async def test_one_account_cannot_write_into_anothers_upload(
    as_, alice: Client, nc: NATS, tmp_path: Path
) -> None:
    mallory = as_("renter", "mallory")
    data = payload(CHUNK + 10, seed=9)
    upload_id = "shared-upload-id"

    def piece(offset: int, body: bytes, final: bool = False) -> cmd.UploadInput:
        extra: dict[str, Any] = {}
        if final:
            extra = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        return cmd.UploadInput(
            command_id=new_command_id(),
            upload_id=upload_id,
            path="in.bin",
            offset=offset,
            data=body,
            final=final,
            **extra,
        )

    await alice.send(piece(0, data[:CHUNK]))
    # Mallory's "next chunk" lands in her own upload, which has no first chunk.
    error = await refused(mallory, piece(CHUNK, b"evil" * 10))
    assert (error.code, error.info.field) == ("invalid", "offset")
    result = await alice.send(piece(CHUNK, data[CHUNK:], final=True), UploadResult)
    assert result.file is not None
    assert result.file.object == f"inputs/alice/{upload_id}/in.bin"


async def test_logs_page_type_is_the_wire_contract(alice: Client, store: EventStore) -> None:
    await place(store)
    page = await alice.send(cmd.GetJobLogs(job_id="job-1"), LogPage)
    assert page == LogPage(job_id="job-1", lines=[], next=0, ended=False)


async def test_big_lines_are_split_to_fit_and_paged_to_fit(
    alice: Client, bob: Client, store: EventStore, nc: NATS
) -> None:
    await place(store)
    texts = [f"{n:04d}" + "x" * 16_000 for n in range(65)]
    command = cmd.RecordOutput(
        command_id=new_command_id(),
        provider_id="prv-1",
        job_id="job-1",
        attempt=1,
        lines=lines(*texts),
    )
    assert len(msgspec.json.encode(command)) < nc.max_payload
    await bob.send(command)
    assert await stored_messages(nc, OUTPUT_STREAM) == 2
    read: list[str] = []
    after = 0
    pages = 0
    while True:
        page = await read_logs(alice, "job-1", after, limit=10_000)
        if not page.lines:
            break
        read += [line.text for line in page.lines]
        after = page.next
        pages += 1
    assert read == texts and pages >= 2


async def test_uploads_through_two_live_instances(
    nats_server: NatsServer,
    nc: NATS,
    store: EventStore,
    clock: Clock,
    alice: Client,
    bob: Client,
    tmp_path: Path,
) -> None:
    """A second instance joins the queue group: wherever each chunk lands, it assembles."""
    await place(store)
    other = await nats.connect(nats_server.url)
    second = Files(other)
    svc = CommandService(other, EventStore(other), clock=clock, extensions=[second])
    await svc.start()
    try:
        data = payload(6 * CHUNK + 1, seed=10)
        (tmp_path / "r").write_bytes(data)
        ref = await upload_results(bob, "prv-1", "job-1", 1, tmp_path / "r")
        await complete(store, results=ref)
        await download_results(alice, "job-1", tmp_path / "back")
        assert (tmp_path / "back").read_bytes() == data
    finally:
        await svc.stop()
        await second.close()
        await other.close()


async def test_an_assembly_claimed_elsewhere_is_waited_for_until_its_claim_lapses(
    bob: Client, store: EventStore, nc: NATS
) -> None:
    from dante.schemas.codec import encode
    from dante.services.files.uploads import Claim

    await place(store)
    data = payload(CHUNK + 1, seed=11)
    digest = hashlib.sha256(data).hexdigest()
    await bob.send(chunk(0, data[:CHUNK]))
    await bob.send(chunk(CHUNK, data[CHUNK:]))
    claims = f"{UPLOAD_PREFIX}.results.bob.job-1.1.claim"
    js = nc.jetstream()

    async def claimed(age_s: float) -> None:
        at = NOW.now(NOW.tzinfo) - timedelta(seconds=age_s)
        claim = Claim(state="assembling", size=len(data), sha256=digest, at=at, by="elsewhere")
        await js.publish(claims, encode(claim), stream=UPLOAD_STREAM)

    final = chunk(len(data), b"", final=True, whole=data)
    await claimed(1)
    error = await refused(bob, final)
    assert error.code == "unavailable" and "another instance" in error.info.message
    await claimed(120)  # that instance stopped renewing its claim: take over
    result = await bob.send(final, UploadResult)
    assert result.file is not None and result.file.sha256 == digest


async def test_chunks_are_found_when_two_objects_interleave(store: EventStore, nc: NATS) -> None:
    """Objects written at once share the stream: a chunk's place is corrected, not guessed."""
    import base64

    js = nc.jetstream()
    data = payload(35, seed=12)
    pieces = [data[at : at + 10] for at in range(0, len(data), 10)]
    for piece in pieces:
        await js.publish("$O.dante_files.C.mine", piece)
        await js.publish("$O.dante_files.C.theirs", b"x" * 10)
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
    meta = {
        "name": "interleaved",
        "bucket": "dante_files",
        "nuid": "mine",
        "size": len(data),
        "chunks": len(pieces),
        "digest": f"SHA-256={digest}",
        "options": {"max_chunk_size": 10},
    }
    name = base64.urlsafe_b64encode(b"interleaved").decode()
    await js.publish(
        f"$O.dante_files.M.{name}", msgspec.json.encode(meta), headers={"Nats-Rollup": "sub"}
    )
    # nats-py reads it back as the object it describes.
    assert (await (await js.object_store("dante_files")).get("interleaved")).data == data
    objects = Objects(nc, js)
    stored = await objects.info("interleaved")
    assert stored is not None and stored.sha256 == hashlib.sha256(data).hexdigest()
    for offset, length in [(25, 10), (0, 35), (12, 3), (9, 2), (30, 100), (35, 1)]:
        assert await objects.read(stored, offset, length) == data[offset : offset + length]
