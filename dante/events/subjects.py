"""The names on the wire: streams, buckets, subjects, consumer names. Pure: no NATS."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from dante.schemas.events import Event

STREAM: Final = "DANTE"
EVENT_PREFIX: Final = "dante.evt"
AGGREGATES: Final = ("provider", "job", "wallet", "platform", "payment")
DISPATCH_STREAM: Final = "DANTE_DISPATCH"
DISPATCH_PREFIX: Final = "dante.agent"
OUTPUT_STREAM: Final = "DANTE_OUTPUT"
OUTPUT_PREFIX: Final = "dante.out"
UPLOAD_STREAM: Final = "DANTE_UPLOADS"
UPLOAD_PREFIX: Final = "dante.upload"
HEARTBEAT_BUCKET: Final = "dante_heartbeats"
FILES_BUCKET: Final = "dante_files"
ACCOUNTS_BUCKET: Final = "dante_accounts"
#: The renters' stored inputs, `<renter>.<digest of the object's name>`: their quota, expiry.
INPUTS_BUCKET: Final = "dante_inputs"
#: Where a client outside the `DANTE` account reaches its JetStream API (nats.conf imports
#: `$JS.API.…` subjects there): `nc.jetstream(prefix=CLIENT_API_PREFIX)`.
CLIENT_API_PREFIX: Final = "$JS.DANTE.API"
DEFAULT_API_PREFIX: Final = "$JS.API"


def subject_of(aggregate: str, aggregate_id: str) -> str:
    return f"{EVENT_PREFIX}.{aggregate}.{aggregate_id}"


def subject_for(event: Event) -> str:
    return f"{EVENT_PREFIX}.{event.AGGREGATE}.{event.aggregate_id}"


def dispatch_subject(owner: str, provider_id: str, job_id: str) -> str:
    return f"{DISPATCH_PREFIX}.{owner}.{provider_id}.{job_id}"


def output_subject(job_id: str) -> str:
    return f"{OUTPUT_PREFIX}.{job_id}"


def heartbeat_key(owner: str, provider_id: str) -> str:
    """The heartbeat KV key of a provider machine."""
    return f"{owner}.{provider_id}"


def heartbeat_subject(owner: str, provider_id: str) -> str:
    """What a KV put of that key publishes to; an agent may publish here and nowhere else."""
    return f"$KV.{HEARTBEAT_BUCKET}.{heartbeat_key(owner, provider_id)}"


def agent_consumer_name(owner: str, provider_id: str) -> str:
    """The durable consumer through which a provider machine's agent gets its instructions.

    `~` separates the parts because neither account names nor provider ids may contain it,
    so no two (owner, provider) pairs share a name; a `-` would let `bob` + `x-1` and
    `bob-x` + `1` collide, and with them their permissions.
    """
    return f"agent~{owner}~{provider_id}"
