"""`ensure_log` never lowers the replicas of a stream or bucket that exists; it may raise them.

Every process of the platform runs `ensure_log` with its own `--replicas`: one started without
it on a three-node cluster must leave the log's three copies alone.
"""

from __future__ import annotations

from typing import Any

import anyio
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import APIError, BadRequestError
from structlog.testing import capture_logs

from dante.events.natsd import NatsServer
from dante.events.records import Append
from dante.events.store import EventStore
from dante.events.streams import LogSettings, ensure_log, target_replicas
from dante.events.subjects import (
    ACCOUNTS_BUCKET,
    DISPATCH_STREAM,
    FILES_BUCKET,
    HEARTBEAT_BUCKET,
    INPUTS_BUCKET,
    OUTPUT_STREAM,
    STREAM,
    UPLOAD_STREAM,
)
from tests.factories import deposit

#: Every JetStream asset, by the name of the stream that holds it.
ASSETS = (
    STREAM,
    DISPATCH_STREAM,
    OUTPUT_STREAM,
    UPLOAD_STREAM,
    f"KV_{HEARTBEAT_BUCKET}",
    f"KV_{ACCOUNTS_BUCKET}",
    f"KV_{INPUTS_BUCKET}",
    f"OBJ_{FILES_BUCKET}",
)
KEPT = "log.replicas_kept"


@pytest.mark.parametrize(
    ("existing", "asked", "target"),
    [
        (None, 1, 1),  # a new asset gets what is asked
        (None, 3, 3),
        (1, 1, 1),
        (3, 3, 3),
        (1, 3, 3),  # raised
        (3, 1, 3),  # never lowered
        (5, 3, 5),
    ],
)
def test_target_replicas_are_those_asked_but_never_fewer_than_an_asset_has(
    existing: int | None, asked: int, target: int
) -> None:
    assert target_replicas(existing, asked) == target


async def replicas(client: NATS) -> dict[str, int]:
    js = client.jetstream()
    return {name: (await js.stream_info(name)).config.num_replicas or 1 for name in ASSETS}


async def configs(client: NATS) -> dict[str, dict[str, Any]]:
    js = client.jetstream()
    return {name: (await js.stream_info(name)).config.as_dict() for name in ASSETS}


@pytest.mark.anyio
async def test_a_start_asking_the_replicas_an_asset_has_changes_nothing(
    nc: NATS, nats_server: NatsServer
) -> None:
    # One node: replicas can be neither more than 1 nor fewer, so a start changes nothing.
    await ensure_log(nc.jetstream(), LogSettings(replicas=1))
    before = await configs(nc)
    assert {name: config["num_replicas"] for name, config in before.items()} == dict.fromkeys(
        ASSETS, 1
    )
    with capture_logs() as lines:
        await ensure_log(nc.jetstream(), LogSettings(replicas=1))
    assert await configs(nc) == before
    assert not [line for line in lines if line["event"] == KEPT]


@pytest.mark.anyio
@pytest.mark.cluster
async def test_on_a_cluster_a_start_raises_replicas_and_never_lowers_them(
    nats_cluster: list[NatsServer],
) -> None:
    client = await nats.connect(servers=[node.url for node in nats_cluster])
    try:
        js = client.jetstream()
        await ensure_log(js, LogSettings(replicas=1))
        assert await replicas(client) == dict.fromkeys(ASSETS, 1)
        store = EventStore(client)
        await store.append(Append(event=deposit("alice", 5), expected=0))

        # `dante serve --replicas 3` once the cluster has three nodes: every asset gets three.
        with capture_logs() as lines:
            await ensure_log(js, LogSettings(replicas=3))
        assert await replicas(client) == dict.fromkeys(ASSETS, 3)
        assert not [line for line in lines if line["event"] == KEPT]

        # A process started without --replicas: it keeps three, and says so for each asset.
        with capture_logs() as lines:
            await ensure_log(js, LogSettings(replicas=1))
        assert await replicas(client) == dict.fromkeys(ASSETS, 3)
        kept = [line for line in lines if line["event"] == KEPT]
        assert sorted(line["asset"] for line in kept) == sorted(ASSETS)
        assert {(line["replicas"], line["asked"], line["log_level"]) for line in kept} == {
            (3, 1, "warning")
        }
        # Nothing was lost on the way, and the log still takes appends.
        assert (await store.last_seq()) == 1
        await store.append(Append(event=deposit("alice", 1), expected=1))
        # Three copies of it: the leader and two peers (scaled up, the peers appear once
        # they have caught up).
        with anyio.fail_after(20):
            while True:
                info = await js.stream_info(STREAM)
                assert info.cluster is not None
                if len([peer for peer in info.cluster.replicas or [] if peer.current]) == 2:
                    break
                await anyio.sleep(0.1)
        assert info.state.messages == 2
    finally:
        await client.close()


#: What a three-node cluster answered a CI run's `dante up --replicas 3` just after its nodes
#: had started: its meta leader had not yet heard from one of them.
NOT_PLACED_YET = "no suitable peers for placement, peer offline"


@pytest.mark.anyio
async def test_a_start_tries_again_a_placement_refused_while_a_node_has_not_reported_in(
    nc: NATS,
) -> None:
    js = nc.jetstream()
    add_stream = js.add_stream
    refused: list[str] = []

    async def refused_once(config: Any = None, **params: Any) -> Any:
        # The real server, but the refusal above for the first stream created (a heartbeat
        # bucket's, after the log's own streams).
        if not refused and config is not None and config.name.startswith("KV_"):
            refused.append(config.name)
            raise BadRequestError(code=400, err_code=10005, description=NOT_PLACED_YET)
        return await add_stream(config, **params)

    js.add_stream = refused_once  # type: ignore[method-assign]
    with capture_logs() as lines:
        await ensure_log(js, LogSettings(replicas=1))
    assert refused == [f"KV_{HEARTBEAT_BUCKET}"]
    retries = [line for line in lines if line["event"] == "log.setup_retry"]
    assert len(retries) == 1 and "no suitable peers for placement" in retries[0]["error"]
    assert await replicas(nc) == dict.fromkeys(ASSETS, 1)


@pytest.mark.anyio
async def test_a_start_asking_what_the_server_can_never_give_fails_at_once(nc: NATS) -> None:
    # One node cannot hold three copies: that is no reason to wait.
    with capture_logs() as lines, pytest.raises(APIError, match="replicas"):
        await ensure_log(nc.jetstream(), LogSettings(replicas=3))
    assert not [line for line in lines if line["event"] == "log.setup_retry"]
