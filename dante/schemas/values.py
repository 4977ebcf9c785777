"""Value types that travel inside events and commands: ids, GPUs, job specifications, usage."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec

from dante.schemas.money import Rate

# Identifiers appear as NATS subject tokens, so they may not hold '.', '*', '>' or spaces.
ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,63}$"
#: Account names: lower case, start with a letter, 2 to 32 characters.
ACCOUNT_PATTERN: Final = r"^[a-z][a-z0-9_-]{1,31}$"
#: The platform's own wallet, which collects fees. No account may take this name.
PLATFORM_WALLET: Final = "platform"
#: `signup` is the user name of connections that open accounts (dante/services/auth/permissions.py).
RESERVED_ACCOUNTS: Final = frozenset(
    {
        PLATFORM_WALLET,
        "operator",
        "system",
        "dante",
        "admin",
        "signup",
        # nats.conf's static users: the server checks them before the callout
        "dante-platform",
        "dante-system",
    }
)

Id = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, description="a subject-safe identifier")]
Account = Annotated[
    str, msgspec.Meta(pattern=ACCOUNT_PATTERN, description="an account name (renter or provider)")
]
WalletId = Annotated[
    str, msgspec.Meta(pattern=ACCOUNT_PATTERN, description="a wallet: an account or 'platform'")
]
EnvName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
Text = Annotated[str, msgspec.Meta(max_length=200)]
Reason = Annotated[str, msgspec.Meta(max_length=1000)]
Count = Annotated[int, msgspec.Meta(ge=0)]
Seq = Annotated[int, msgspec.Meta(ge=0, description="a stream sequence; 0 means none")]
GpuIndex = Annotated[int, msgspec.Meta(ge=0, le=255)]
GpuCount = Annotated[int, msgspec.Meta(ge=1, le=64)]
Attempt = Annotated[int, msgspec.Meta(ge=1, le=1000)]
#: Milliseconds of GPU time; a single sample never covers more than a day.
GpuMs = Annotated[int, msgspec.Meta(ge=0, le=86_400_000)]
#: A Solana public key: 32 bytes in base58, 32 to 44 characters.
SolanaAddress = Annotated[
    str, msgspec.Meta(pattern=r"^[1-9A-HJ-NP-Za-km-z]{32,44}$", description="base58 public key")
]
#: A relative path inside a job's work folder, checked again where it is used.
RelPath = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
#: A transaction signature, base58 (64 bytes).
Signature = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[1-9A-HJ-NP-Za-km-z]{64,90}$", description="a Solana transaction signature"
    ),
]

MAX_SCRIPT_BYTES: Final = 1_048_576
MAX_DURATION_S: Final = 30 * 24 * 3600

#: A moment in time; always timezone-aware (Dante writes UTC).
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]

Vendor = Literal["nvidia", "amd", "apple", "intel"]


class Gpu(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """One GPU of a provider, as detected by the agent (or simulated, and then marked so)."""

    index: GpuIndex
    uuid: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    vendor: Vendor
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    vram_mb: Annotated[int, msgspec.Meta(ge=0, le=16_777_216)]
    simulated: bool = False
    driver_version: str | None = None
    cuda_version: str | None = None
    compute_capability: str | None = None
    power_limit_w: Annotated[int, msgspec.Meta(ge=0, le=100_000)] | None = None
    pci_bus_id: str | None = None
    cores: Annotated[int, msgspec.Meta(ge=0)] | None = None

    @property
    def vram_gb(self) -> int:
        """VRAM in whole GB, rounded half up (81559 MiB -> 80, 24564 MiB -> 24)."""
        return (self.vram_mb + 512) // 1024


class GpuOffer(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """A provider's price and availability for one of its GPUs."""

    index: GpuIndex
    price: Rate
    available: bool = True


class JobRequirements(
    msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True
):
    """What a job needs from the GPUs it runs on and what the renter will pay at most."""

    gpu_count: GpuCount = 1
    #: A model or family ("H100", "RTX 4090", "RTX"); matched on normalised names. None: any.
    gpu_model: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    min_vram_gb: Annotated[int, msgspec.Meta(ge=0, le=16_384)] | None = None
    #: The most the renter pays per GPU-hour. None: any price.
    max_price: Rate | None = None
    #: The longest the job may run; it is stopped then. None: until it ends or funds run out.
    max_duration_s: Annotated[int, msgspec.Meta(ge=1, le=MAX_DURATION_S)] | None = None


class DockerPayload(
    msgspec.Struct,
    frozen=True,
    gc=False,
    kw_only=True,
    tag="docker",
    tag_field="kind",
    forbid_unknown_fields=True,
):
    """Run a Docker image with a command."""

    image: Annotated[
        str, msgspec.Meta(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
    ]
    command: list[Annotated[str, msgspec.Meta(max_length=32_768)]] = msgspec.field(
        default_factory=list
    )
    env: dict[EnvName, Annotated[str, msgspec.Meta(max_length=32_768)]] = msgspec.field(
        default_factory=dict
    )
    #: Containers have no network unless the job asks for it.
    network: bool = False


class ScriptPayload(
    msgspec.Struct,
    frozen=True,
    gc=False,
    kw_only=True,
    tag="script",
    tag_field="kind",
    forbid_unknown_fields=True,
):
    """Run a script with a stated interpreter."""

    script: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SCRIPT_BYTES)]
    interpreter: Literal["python3", "bash"] = "python3"
    args: list[Annotated[str, msgspec.Meta(max_length=32_768)]] = msgspec.field(
        default_factory=list
    )
    env: dict[EnvName, Annotated[str, msgspec.Meta(max_length=32_768)]] = msgspec.field(
        default_factory=dict
    )


JobPayload = DockerPayload | ScriptPayload


class FileRef(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """A file in the object store: a job input or a bundle of results."""

    object: Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
    #: Where it goes in (or came from) the job's work folder, relative.
    path: RelPath
    size: Annotated[int, msgspec.Meta(ge=0)]
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]


class GpuSample(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """One GPU's use over one tick, with what the GPU itself reported."""

    index: GpuIndex
    gpu_ms: GpuMs
    utilization_pct: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    memory_used_mb: Annotated[int, msgspec.Meta(ge=0)] | None = None
    power_w: Annotated[int, msgspec.Meta(ge=0, le=100_000)] | None = None
    temperature_c: Annotated[int, msgspec.Meta(ge=-50, le=200)] | None = None
    #: The GPU is simulated (`dante agent run --simulate`): the readings are made up by the
    #: agent, not measured. Set by the agent, and by the platform for every GPU its provider
    #: registered as simulated. Absent (False) in events recorded before it existed.
    simulated: bool = False


class UsageTick(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """One metering interval of a job attempt: numbered from 1, one sample per assigned GPU."""

    seq: Annotated[int, msgspec.Meta(ge=1)]
    ended_at: Timestamp
    samples: Annotated[list[GpuSample], msgspec.Meta(min_length=1, max_length=64)]

    @property
    def gpu_ms(self) -> int:
        return sum(s.gpu_ms for s in self.samples)


_UNSAFE_SEGMENTS: Final = frozenset({"", ".", ".."})


def check_relative_path(path: str) -> str:
    """Return `path` if it stays inside the folder it is relative to; raise ValueError if not.

    Absolute paths, backslashes, '..' and empty segments are refused, so a path from a job
    can never reach outside that job's work folder.
    """
    if path.startswith("/") or "\\" in path or "\x00" in path:
        raise ValueError(f"path {path!r} must be relative to the job's folder")
    if re.match(r"^[A-Za-z]:", path):
        raise ValueError(f"path {path!r} must be relative to the job's folder")
    parts = path.split("/")
    if any(part in _UNSAFE_SEGMENTS for part in parts):
        raise ValueError(f"path {path!r} may not contain '..', '.' or empty segments")
    return path
