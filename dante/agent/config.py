"""The agent's settings: command-line options, then the environment, then a `.env` file.

A provider configures the agent the way it already knows: `PROVIDER_NAME`,
`SOLANA_WALLET_ADDRESS`, `DANTE_NATS_URL` (or `NATS_ADDRESS`), `DANTE_USERNAME` and
`DANTE_PASSWORD`, in the environment or in a `.env` file in the working directory (simple
`KEY=VALUE` lines; the real environment wins). Options on the command line win over both.
Everything is checked here, once, with messages that say what to fix.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from dante.agent.executors.sandbox import SANDBOX_MODES, SandboxMode
from dante.client.dotenv import DotenvError, read_env_file
from dante.schemas.money import MoneyError, parse_dgpu
from dante.schemas.values import ACCOUNT_PATTERN, RESERVED_ACCOUNTS

ExecutorChoice = Literal["docker", "script"]

DEFAULT_TICK_S: Final = 10.0
DEFAULT_DRAIN_S: Final = 60.0
DEFAULT_STOP_GRACE_S: Final = 10.0
_SOLANA: Final = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{32,44}$")
_ACCOUNT: Final = re.compile(ACCOUNT_PATTERN)


class ConfigError(ValueError):
    """A setting is missing or wrong; the message says which and how to fix it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentOptions:
    """What the command line gave (None: not given)."""

    name: str | None = None
    wallet: str | None = None
    price: str | None = None
    executor: ExecutorChoice | None = None
    work_dir: Path | None = None
    max_jobs: int | None = None
    nats_url: str | None = None
    simulate: str | None = None
    location: str | None = None
    drain_timeout: float | None = None
    tick_seconds: float | None = None
    memory_limit_mb: int | None = None
    cpu_limit: float | None = None
    stop_grace: float | None = None
    script_sandbox: SandboxMode | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """Checked settings of one agent."""

    owner: str
    password: str | None
    name: str
    wallet: str
    #: µdGPU per GPU-hour for every GPU; None: each GPU's suggested price.
    price: int | None
    #: None: Docker when an engine answers, else scripts.
    executor: ExecutorChoice | None
    work_dir: Path
    #: None: as many as the GPUs allow.
    max_jobs: int | None
    nats_url: str
    simulate: str | None
    location: str
    drain_timeout_s: float
    tick_s: float
    memory_limit_mb: int | None
    cpu_limit: float | None
    stop_grace_s: float
    log_level: str | None
    host: str
    #: How script jobs are confined (see dante.agent.executors.sandbox).
    script_sandbox: SandboxMode
    #: The `.env` file read (whether or not it exists): a job must never read it.
    dotenv: Path | None
    #: `$DANTE_DATA_DIR` when set: the platform's data on a machine that runs both.
    data_dir: Path | None


def read_dotenv(path: Path) -> dict[str, str]:
    """`KEY=VALUE` lines of a `.env` file (see `dante.client.dotenv`), errors as ConfigError."""
    try:
        return read_env_file(path)
    except DotenvError as exc:
        raise ConfigError(str(exc)) from None


def default_work_dir(env: Mapping[str, str]) -> Path:
    """`$DANTE_DATA_DIR/agent`, else `$XDG_DATA_HOME/dante/agent`, else ~/.local/share/…"""
    explicit = env.get("DANTE_DATA_DIR")
    if explicit:
        return Path(explicit) / "agent"
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dante" / "agent"


def load_config(
    options: AgentOptions,
    environ: Mapping[str, str] | None = None,
    dotenv: Path | None = Path(".env"),
) -> AgentConfig:
    """Merge options, environment and `.env` (in that order of precedence) and check them."""
    env = dict(read_dotenv(dotenv) if dotenv is not None else {})
    env.update(os.environ if environ is None else environ)

    owner = env.get("DANTE_USERNAME", "").strip()
    if not owner:
        raise ConfigError(
            "DANTE_USERNAME is not set: the agent acts as your provider account; set it (and "
            "DANTE_PASSWORD) in the environment or in .env"
        )
    if not _ACCOUNT.match(owner) or owner in RESERVED_ACCOUNTS:
        raise ConfigError(
            f"DANTE_USERNAME {owner!r} is not an account name (lower case letters, digits, "
            "'-' and '_', starting with a letter, 2 to 32 characters)"
        )
    host = socket.gethostname()
    name = (options.name or env.get("PROVIDER_NAME") or host).strip()
    if not name or len(name) > 200:
        raise ConfigError("--name (PROVIDER_NAME) must be 1 to 200 characters")
    wallet = (options.wallet or env.get("SOLANA_WALLET_ADDRESS") or "").strip()
    if not wallet:
        raise ConfigError(
            "--wallet (SOLANA_WALLET_ADDRESS) is not set: the Solana address your earnings are "
            "paid out to"
        )
    if not _SOLANA.match(wallet):
        raise ConfigError(
            f"--wallet {wallet!r} is not a Solana address (32 to 44 base58 characters)"
        )
    price = None
    if options.price is not None:
        try:
            price = parse_dgpu(options.price)
        except MoneyError as exc:
            raise ConfigError(f"--price: {exc} (dGPU per GPU-hour)") from None
    if options.executor not in (None, "docker", "script"):
        raise ConfigError(f"--executor must be docker or script, not {options.executor!r}")
    location = (options.location or "").strip()
    if len(location) > 200:
        raise ConfigError("--location must be at most 200 characters")
    return AgentConfig(
        owner=owner,
        password=env.get("DANTE_PASSWORD") or None,
        name=name,
        wallet=wallet,
        price=price,
        executor=options.executor,
        work_dir=(options.work_dir or default_work_dir(env)).expanduser().absolute(),
        max_jobs=_positive_int("--max-jobs", options.max_jobs),
        nats_url=(
            options.nats_url
            or env.get("DANTE_NATS_URL")
            or env.get("NATS_ADDRESS")
            or "nats://127.0.0.1:4222"
        ),
        simulate=options.simulate,
        location=location,
        drain_timeout_s=_seconds("--drain-timeout", options.drain_timeout, DEFAULT_DRAIN_S, 0),
        tick_s=_seconds("--tick-seconds", options.tick_seconds, DEFAULT_TICK_S, 0.1),
        memory_limit_mb=_positive_int("--memory-limit-mb", options.memory_limit_mb),
        cpu_limit=_positive_float("--cpu-limit", options.cpu_limit),
        stop_grace_s=_seconds("--stop-grace", options.stop_grace, DEFAULT_STOP_GRACE_S, 0),
        log_level=env.get("LOG_LEVEL") or None,
        host=host[:200],
        script_sandbox=_sandbox_mode(
            options.script_sandbox or env.get("DANTE_SCRIPT_SANDBOX", "").strip() or "auto"
        ),
        dotenv=dotenv.absolute() if dotenv is not None else None,
        data_dir=Path(env["DANTE_DATA_DIR"]).absolute() if env.get("DANTE_DATA_DIR") else None,
    )


def _sandbox_mode(wanted: str) -> SandboxMode:
    for mode in SANDBOX_MODES:
        if mode == wanted:
            return mode
    raise ConfigError(
        f"--script-sandbox (DANTE_SCRIPT_SANDBOX) must be auto, require or off, not {wanted!r}"
    )


def _positive_int(option: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise ConfigError(f"{option} must be at least 1, not {value}")
    return value


def _positive_float(option: str, value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise ConfigError(f"{option} must be positive, not {value}")
    return value


def _seconds(option: str, value: float | None, default: float, least: float) -> float:
    if value is None:
        return default
    if not value >= least or value > 86_400 * 30:
        raise ConfigError(f"{option} must be between {least:g} and 2592000 seconds, not {value}")
    return float(value)
