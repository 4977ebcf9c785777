"""The operator's settings for logins and connections: defaults, and `DANTE_…` variables.

Each limit has the default a public platform would choose and a variable that changes it,
read when the platform starts (`LoginLimits.from_env`, `ClientLimits.from_env`; the scrypt
cost at each hash, `scrypt_log2_n`); `dante up` checks them all first (`check_settings`):
a value that is not a number in range stops it with a message naming the variable.

Logins (see `dante.services.auth.gate` and `.throttle`):
- `DANTE_LOGIN_PENDING_PER_ADDRESS` (16): password logins under way at once from one client
  address; more are refused at once, unchecked.
- `DANTE_LOGIN_FAILURES_PER_ADDRESS` (20) and `DANTE_LOGIN_FAILURES_PER_MINUTE` (30): a
  burst of failed password checks one address may make, and how fast it refills; with none
  left, the address's password logins are refused unchecked (no scrypt spent on them).
- `DANTE_LOGIN_HASHING` (the CPUs, at most 4): password hashes computed at once, shared
  between addresses in turn; `DANTE_LOGIN_HASHING_PER_ADDRESS` (1) of them for one address.
- `DANTE_LOGIN_REFUSAL_DELAY_MS` (1000): how long a refused login waits for its answer
  (within the login's window): a client that tries again at once, as an attacker's loop
  does, then makes one attempt a second per connection rather than hundreds, and the
  refusals stop taking the CPU a legitimate login's hash needs. Nothing waits for a
  login that is let in.
- `DANTE_SIGNUPS_PER_ADDRESS` (20) and `DANTE_SIGNUPS_PER_HOUR` (10): a burst of sign-up
  connections one address may open, and how fast it refills; beyond it the address's
  sign-up connections are refused. Each sign-up connection opens at most one account in
  at most `SIGNUP_TRIES` (3) tries (a taken name, a weak password), so one address cannot
  fill the platform with accounts (each with its own fair share of everything) nor keep
  the sign-ups' password hashing busy.
- `DANTE_SCRYPT_LOG2_N` (17): the scrypt cost of new password hashes (and of rehashing an
  older one at its next login): N = 2^17, r = 8, p = 1, about 128 MiB and a few tenths of
  a second each. Lower only for tests and trials.

Connections (each connection of the `PUBLIC` account, enforced by nats-server: nats.conf
reads them from its environment, which `dante up` fills, and `nats.env` holds them for a
server run by hand):
- `DANTE_CLIENT_MAX_SUBSCRIPTIONS` (1000): subscriptions one connection may hold; the
  server refuses the next one.
- `DANTE_CLIENT_MAX_PAYLOAD` (4194304): the largest message one connection may publish, in
  bytes; the server closes a connection that sends a larger one. Commands need up to about
  2 MiB (a 1 MiB job script, escaped) and agents batch output up to what the server
  announces, so lower it only knowing that.
nats-server has no per-connection rate of data: how fast an account may ask is the command
service's admission, and `max_pending` in nats.conf bounds what a slow reader holds up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Self

_MAX_HASHING: Final = 4


class LimitError(ValueError):
    """An operator's setting that cannot be used."""


def _read(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise LimitError(f"${name} must be a whole number, not {text!r}") from None
    if not low <= value <= high:
        raise LimitError(f"${name} must be from {low} to {high}, not {value}")
    return value


def default_hashing() -> int:
    return max(1, min(_MAX_HASHING, os.cpu_count() or 1))


@dataclass(frozen=True, slots=True)
class LoginLimits:
    pending_per_address: int = 16
    failures_per_address: int = 20
    failures_per_minute: int = 30
    hashing: int = 0  # 0: `default_hashing()`
    hashing_per_address: int = 1
    refusal_delay_ms: int = 1000
    signups_per_address: int = 20
    signups_per_hour: int = 10

    @property
    def hashing_slots(self) -> int:
        return self.hashing or default_hashing()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        return cls(
            pending_per_address=_read(env, "DANTE_LOGIN_PENDING_PER_ADDRESS", 16, 1, 10_000),
            failures_per_address=_read(env, "DANTE_LOGIN_FAILURES_PER_ADDRESS", 20, 1, 1_000_000),
            failures_per_minute=_read(env, "DANTE_LOGIN_FAILURES_PER_MINUTE", 30, 1, 1_000_000),
            hashing=_read(env, "DANTE_LOGIN_HASHING", 0, 0, 256),
            hashing_per_address=_read(env, "DANTE_LOGIN_HASHING_PER_ADDRESS", 1, 1, 256),
            refusal_delay_ms=_read(env, "DANTE_LOGIN_REFUSAL_DELAY_MS", 1000, 0, 1500),
            signups_per_address=_read(env, "DANTE_SIGNUPS_PER_ADDRESS", 20, 1, 1_000_000),
            signups_per_hour=_read(env, "DANTE_SIGNUPS_PER_HOUR", 10, 1, 1_000_000),
        )


#: Sign-up requests one sign-up connection may make (it opens one account at most).
SIGNUP_TRIES: Final = 3

SCRYPT_VAR: Final = "DANTE_SCRYPT_LOG2_N"
DEFAULT_LOG2_N: Final = 17
#: Below 2^10 scrypt protects nothing; above 2^22 one hash needs 4 GiB.
MIN_LOG2_N: Final = 10
MAX_LOG2_N: Final = 22


def scrypt_log2_n(env: Mapping[str, str] | None = None) -> int:
    """The scrypt cost the operator set (`$DANTE_SCRYPT_LOG2_N`), else 17."""
    env = os.environ if env is None else env
    return _read(env, SCRYPT_VAR, DEFAULT_LOG2_N, MIN_LOG2_N, MAX_LOG2_N)


#: nats-server's `max_payload` in nats.conf: no connection may be given more.
SERVER_MAX_PAYLOAD: Final = 4 * 1024 * 1024


SUBSCRIPTIONS_VAR: Final = "DANTE_CLIENT_MAX_SUBSCRIPTIONS"
PAYLOAD_VAR: Final = "DANTE_CLIENT_MAX_PAYLOAD"


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """The NATS limits of every connection the callout lets in."""

    subscriptions: int = 1000
    payload: int = SERVER_MAX_PAYLOAD

    def claims(self) -> dict[str, int]:
        """As a user JWT's limits (nats-server enforces the account's: `server_env`)."""
        return {"subs": self.subscriptions, "payload": self.payload, "data": -1}

    def server_env(self) -> dict[str, str]:
        """The variables nats.conf reads for the `PUBLIC` account's limits."""
        return {SUBSCRIPTIONS_VAR: str(self.subscriptions), PAYLOAD_VAR: str(self.payload)}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        default = cls()
        return cls(
            subscriptions=_read(env, SUBSCRIPTIONS_VAR, default.subscriptions, 16, 1_000_000),
            payload=_read(env, PAYLOAD_VAR, default.payload, 4096, SERVER_MAX_PAYLOAD),
        )


def check_settings(env: Mapping[str, str] | None = None) -> None:
    """Raise `LimitError` for the first setting that cannot be used (`dante up` checks
    before it starts anything)."""
    LoginLimits.from_env(env)
    ClientLimits.from_env(env)
    scrypt_log2_n(env)
