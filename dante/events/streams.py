"""Where things live in JetStream: the event log, and the homes of what is not a domain event.

- `DANTE`: the log. Subjects `dante.evt.<aggregate>.<id>`. File storage, no limits (events
  are never dropped), deletes and purges denied, atomic batches and direct gets allowed.
- `DANTE_DISPATCH`: instructions to agents (`dante.agent.<owner>.<provider_id>.<job_id>`),
  derived from the log by the handlers; an agent's durable consumer sees only its own.
- `DANTE_OUTPUT`: job output lines (`dante.out.<job_id>`), kept for a limited time and size.
- `DANTE_UPLOADS`: chunks of uploads in progress (`dante.upload.<key>.chunk`) and who is
  assembling them (`dante.upload.<key>.claim`); staging only, forgotten after a day.
- KV `dante_heartbeats`: one key per provider machine, `<owner>.<provider_id>`, written every
  few seconds by its agent (so nats-server can let an account write only its own keys).
- Object store `dante_files`: job inputs and results, within its own limit
  (`LogSettings.files_max_bytes`), so files never take the room the log needs.
- KV `dante_accounts`: accounts and their password hashes; only the platform reads it.
- KV `dante_inputs`: each renter's stored inputs (its quota, their expiry).

Every asset lives in the `DANTE` account. Clients in the `PUBLIC` account reach the few
JetStream subjects they may use through service imports, the API ones under
`CLIENT_API_PREFIX` (see nats.conf).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import structlog
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import KV_STREAM_TEMPLATE
from nats.js.errors import APIError, BadRequestError, NotFoundError, ServiceUnavailableError
from nats.js.object_store import OBJ_STREAM_TEMPLATE

from dante.events.subjects import (
    ACCOUNTS_BUCKET,
    DISPATCH_PREFIX,
    DISPATCH_STREAM,
    EVENT_PREFIX,
    FILES_BUCKET,
    HEARTBEAT_BUCKET,
    INPUTS_BUCKET,
    OUTPUT_PREFIX,
    OUTPUT_STREAM,
    STREAM,
    UPLOAD_PREFIX,
    UPLOAD_STREAM,
    agent_consumer_name,
)

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext


_DAY: Final = 86_400.0

log = structlog.get_logger(__name__)


def agent_consumer_config(owner: str, provider_id: str) -> ConsumerConfig:
    """Created by the platform, never by the agent: a client that may create consumers may
    also point one's deliveries at any subject of the account, the log's included."""
    name = agent_consumer_name(owner, provider_id)
    return ConsumerConfig(
        name=name,
        durable_name=name,
        description=f"instructions for {owner}'s provider {provider_id}",
        filter_subject=f"{DISPATCH_PREFIX}.{owner}.{provider_id}.>",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=30.0,
        max_ack_pending=1000,
    )


@dataclass(frozen=True, slots=True)
class LogSettings:
    """How the JetStream assets are configured; the defaults suit one node."""

    replicas: int = 1
    #: How long a message id is remembered for de-duplication.
    duplicate_window_s: float = 120.0
    output_max_age_s: float = 7 * _DAY
    output_max_bytes: int = 1 << 30
    dispatch_max_age_s: float = 7 * _DAY
    #: Provider machines the dispatch stream can serve (one durable consumer each).
    dispatch_max_consumers: int = 1_000_000
    #: An upload not finished within this time is forgotten (its chunks expire).
    upload_max_age_s: float = _DAY
    #: Room for uploads in progress; a chunk beyond it is refused, never an older one dropped.
    upload_max_bytes: int = 4 << 30
    #: Heartbeat keys of vanished providers are forgotten after this long.
    heartbeat_ttl_s: float = 7 * _DAY
    #: Room for job inputs and results (`dante_files`); a file beyond it is refused. With
    #: the output's and the uploads' limits it is reserved out of the server's file store
    #: (nats.conf `max_file_store`), so files can never take the room the log needs.
    files_max_bytes: int = 10 << 30


def event_stream_config(settings: LogSettings) -> StreamConfig:
    return StreamConfig(
        name=STREAM,
        description="Dante's event log: the source of truth",
        subjects=[f"{EVENT_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_msgs=-1,
        max_bytes=-1,
        max_age=0,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_s,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
        allow_atomic=True,
    )


def _dispatch_config(settings: LogSettings) -> StreamConfig:
    return StreamConfig(
        name=DISPATCH_STREAM,
        description="Instructions to agents, derived from the log",
        subjects=[f"{DISPATCH_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=settings.dispatch_max_age_s,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_s,
        allow_direct=True,
        # One consumer per provider machine. nats-server 2.15 limits a stream that names no
        # limit to 1,000 consumers, which a fleet passes (and 0 or -1 mean that default).
        max_consumers=settings.dispatch_max_consumers,
    )


def _output_config(settings: LogSettings) -> StreamConfig:
    return StreamConfig(
        name=OUTPUT_STREAM,
        description="Job output lines, kept for a limited time",
        subjects=[f"{OUTPUT_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=settings.output_max_age_s,
        max_bytes=settings.output_max_bytes,
        discard=DiscardPolicy.OLD,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_s,
        allow_direct=True,
    )


def _upload_config(settings: LogSettings) -> StreamConfig:
    return StreamConfig(
        name=UPLOAD_STREAM,
        description="Chunks of uploads in progress, until they are assembled into files",
        subjects=[f"{UPLOAD_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=settings.upload_max_age_s,
        max_bytes=settings.upload_max_bytes,
        discard=DiscardPolicy.NEW,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_s,
        allow_direct=True,
    )


def target_replicas(existing: int | None, asked: int) -> int:
    """The replicas to give an asset: those asked for, but never fewer than it has.

    Every process that runs the platform sets the assets up with its own `--replicas`; one
    started without it on a three-node cluster must not take the log down to one copy. So
    a start may raise an asset's replicas (`dante serve --replicas 3` once the cluster has
    grown), never lower them: that takes an operator's deliberate edit of the stream."""
    return asked if existing is None else max(existing, asked)


async def _replicas(js: JetStreamContext, stream: str, asked: int) -> tuple[int | None, int]:
    """(the replicas the stream has, None if there is none; the replicas to give it)."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return None, asked
    existing = info.config.num_replicas or 1
    target = target_replicas(existing, asked)
    if target > asked:
        log.warning(
            "log.replicas_kept",
            asset=stream,
            replicas=existing,
            asked=asked,
            note="a start never lowers an asset's replicas",
        )
    return existing, target


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    assert config.name is not None
    asked = config.num_replicas or 1
    existing, replicas = await _replicas(js, config.name, asked)
    if existing is None:
        try:
            await js.add_stream(config)
        except BadRequestError:
            # Another process created it between our look and our add: update it instead,
            # keeping the replicas it was created with if they are more.
            _, replicas = await _replicas(js, config.name, asked)
        else:
            return
    await js.update_stream(config.evolve(num_replicas=replicas))


async def _bucket_replicas(
    js: JetStreamContext, stream: str, asked: int, *, direct: bool = False
) -> int:
    """The replicas to create a KV or object store bucket with (on the stream that holds it),
    raising those of an existing one first (and allowing direct gets, with `direct`): its
    create is refused unless it matches."""
    existing, replicas = await _replicas(js, stream, asked)
    if existing is None:
        return replicas
    config = (await js.stream_info(stream)).config
    if replicas > existing or (direct and not config.allow_direct):
        await js.update_stream(
            config.evolve(num_replicas=replicas, allow_direct=direct or config.allow_direct)
        )
    return replicas


async def _bucket_max_bytes(js: JetStreamContext, stream: str, max_bytes: int) -> bool:
    """Give an existing bucket's stream its room (a bucket made before it had a limit gets
    one); False where there is no such bucket yet. An existing bucket is never created
    again: nats-server would count its reserved room twice and refuse."""
    try:
        config = (await js.stream_info(stream)).config
    except NotFoundError:
        return False
    if config.max_bytes != max_bytes:
        await js.update_stream(config.evolve(max_bytes=max_bytes))
    return True


async def wait_for_jetstream(js: JetStreamContext, timeout: float = 30.0) -> None:
    """Wait until JetStream answers (a fresh cluster first has to elect its meta leader)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await js.account_info()
        except (NatsTimeoutError, ServiceUnavailableError, NoRespondersError, APIError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"JetStream did not become available: {exc!r}") from exc
            await asyncio.sleep(0.2)
        else:
            return


#: How many times a start tries to set the log up when JetStream does not answer in time.
#: On a fresh cluster every process of the platform creates the replicated assets at once:
#: a create or update that waits on the others' (and on a new stream's election) can take
#: longer than one API timeout, and a stream another process is creating can be refused
#: as taken by its add and still not found by its update. Every step is idempotent, so it
#: is simply done again. So is a placement JetStream refuses because a peer it knows of has
#: not reported in yet ("no suitable peers for placement, peer offline"): a cluster whose
#: nodes have just started (a CI run met it) has elected its meta leader before every node
#: has spoken to it.
_SETUP_TRIES: Final = 8

#: JetStream's error code for a stream it has no peers to place on (yet).
_NO_SUITABLE_PEERS: Final = 10005


def _worth_retrying(exc: Exception) -> bool:
    if isinstance(exc, (NatsTimeoutError, NotFoundError)):
        return True
    return isinstance(exc, APIError) and exc.err_code == _NO_SUITABLE_PEERS


async def ensure_log(js: JetStreamContext, settings: LogSettings | None = None) -> None:
    """Create or update every JetStream asset Dante uses. Safe to run at every start.

    An existing asset keeps its replicas when `settings` asks for fewer (`target_replicas`),
    with a warning naming it and both numbers. A step JetStream does not answer in time, or
    cannot place yet, is tried again (`_SETUP_TRIES` in all)."""
    settings = settings or LogSettings()
    await wait_for_jetstream(js)
    for attempt in range(1, _SETUP_TRIES + 1):
        try:
            await _ensure_assets(js, settings)
        except (NatsTimeoutError, APIError) as exc:
            if attempt == _SETUP_TRIES or not _worth_retrying(exc):
                raise
            log.warning("log.setup_retry", attempt=attempt, error=str(exc) or repr(exc))
            await asyncio.sleep(min(0.5 * attempt, 2.0))
        else:
            return


async def _ensure_assets(js: JetStreamContext, settings: LogSettings) -> None:
    asked = settings.replicas
    kv, obj = KV_STREAM_TEMPLATE, OBJ_STREAM_TEMPLATE  # the streams that hold buckets
    await _ensure_stream(js, event_stream_config(settings))
    await _ensure_stream(js, _dispatch_config(settings))
    await _ensure_stream(js, _output_config(settings))
    await _ensure_stream(js, _upload_config(settings))
    await js.create_key_value(
        KeyValueConfig(
            bucket=HEARTBEAT_BUCKET,
            description="Agent heartbeats",
            history=1,
            ttl=settings.heartbeat_ttl_s,
            storage=StorageType.FILE,
            replicas=await _bucket_replicas(js, kv.format(bucket=HEARTBEAT_BUCKET), asked),
        )
    )
    # Read with direct gets, which every current replica answers: the auth callout checks
    # logins in it, and must go on doing so while a cluster elects the bucket a new leader
    # (4 to 9 s after a leader's node died), or every client reconnecting then is refused.
    accounts = kv.format(bucket=ACCOUNTS_BUCKET)
    await js.create_key_value(
        KeyValueConfig(
            bucket=ACCOUNTS_BUCKET,
            description="Accounts: role, password hash, login token digests",
            history=1,
            storage=StorageType.FILE,
            replicas=await _bucket_replicas(js, accounts, asked, direct=True),
            direct=True,
        )
    )
    await js.create_key_value(
        KeyValueConfig(
            bucket=INPUTS_BUCKET,
            description="Renters' stored inputs: their quota and expiry",
            history=1,
            storage=StorageType.FILE,
            replicas=await _bucket_replicas(js, kv.format(bucket=INPUTS_BUCKET), asked),
        )
    )
    files = obj.format(bucket=FILES_BUCKET)
    replicas = await _bucket_replicas(js, files, asked)
    if await _bucket_max_bytes(js, files, settings.files_max_bytes):
        return
    try:
        await js.create_object_store(
            FILES_BUCKET,
            config=ObjectStoreConfig(
                description="Job inputs and results",
                storage=StorageType.FILE,
                replicas=replicas,
                max_bytes=settings.files_max_bytes,
            ),
        )
    except APIError:
        # Another process created it between our look and our create (the server counts a
        # create of an existing bucket's room twice, and refuses it): it is there.
        if not await _bucket_max_bytes(js, files, settings.files_max_bytes):
            raise


async def ensure_agent_consumer(js: JetStreamContext, owner: str, provider_id: str) -> None:
    """Create (or bring up to date) a provider machine's dispatch consumer."""
    await js.add_consumer(DISPATCH_STREAM, config=agent_consumer_config(owner, provider_id))
