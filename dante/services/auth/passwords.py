"""Password hashes (scrypt, salted, slow) and login tokens (random, stored as digests).

A password is kept only as `scrypt$<log2 n>$<r>$<p>$<salt>$<hash>` (base64): each hash
carries its own cost, so the cost can be raised without invalidating stored hashes. New
hashes use N = 2^17, r = 8, p = 1 (OWASP's current minimum for scrypt): about 128 MiB and a
few tenths of a second per check, cheap for one login, expensive for a guesser with the
hash. `$DANTE_SCRYPT_LOG2_N` changes N (tests use a small one). A hash made at another cost
(the 2^15 of earlier installations) still verifies, and `needs_rehash` tells the callout to
store a new one, at the current cost, once the password has been checked right.

A login token is 32 random bytes; only its SHA-256 is stored. A slow hash would add nothing
to 256 bits of randomness and would make every reconnect of an agent cost a scrypt.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

from dante.services.auth.limits import DEFAULT_LOG2_N, MAX_LOG2_N, MIN_LOG2_N, scrypt_log2_n

_SCHEME: Final = "scrypt"
_SALT_BYTES: Final = 16
_KEY_BYTES: Final = 32
#: Marks a login token, so a connection's secret is checked as one or as a password, never
#: both; passwords may not start with it.
TOKEN_PREFIX: Final = "dtk_"  # noqa: S105 (a marker, not a secret)
MIN_PASSWORD: Final = 8
MAX_PASSWORD: Final = 1024


@dataclass(frozen=True, slots=True)
class ScryptCost:
    log2_n: int = DEFAULT_LOG2_N
    r: int = 8
    p: int = 1

    @property
    def maxmem(self) -> int:
        # scrypt needs 128 * r * n bytes; leave room for the rest.
        return 2 * 128 * self.r * (1 << self.log2_n) + (1 << 20)


DEFAULT_COST: Final = ScryptCost()


def current_cost() -> ScryptCost:
    """The cost of new hashes: N from `$DANTE_SCRYPT_LOG2_N`, else 2^17."""
    return ScryptCost(log2_n=scrypt_log2_n())


class WeakPassword(ValueError):
    """A password the platform will not accept."""


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise WeakPassword(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise WeakPassword(f"a password may have at most {MAX_PASSWORD} characters")
    if password.startswith(TOKEN_PREFIX):
        raise WeakPassword(f"a password may not start with {TOKEN_PREFIX!r}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _scrypt(password: str, salt: bytes, cost: ScryptCost) -> bytes:
    return hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=1 << cost.log2_n,
        r=cost.r,
        p=cost.p,
        maxmem=cost.maxmem,
        dklen=_KEY_BYTES,
    )


def hash_password(password: str, cost: ScryptCost | None = None) -> str:
    """A salted scrypt hash of `password`, with its parameters, as one string (at
    `current_cost()` unless `cost` says otherwise)."""
    cost = cost or current_cost()
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(password, salt, cost)
    return f"{_SCHEME}${cost.log2_n}${cost.r}${cost.p}${_b64(salt)}${_b64(key)}"


def cost_of(stored: str) -> ScryptCost | None:
    """The parameters a stored hash was made with; None for what is not one of ours."""
    try:
        scheme, log2_n, r, p, _, _ = stored.split("$")
        cost = ScryptCost(int(log2_n), int(r), int(p))
    except ValueError:
        return None
    if scheme != _SCHEME or not MIN_LOG2_N <= cost.log2_n <= MAX_LOG2_N:
        return None
    if not 1 <= cost.r <= 32 or not 1 <= cost.p <= 16:
        return None
    return cost


def needs_rehash(stored: str, cost: ScryptCost | None = None) -> bool:
    """Whether a hash was made at another cost than new ones are (`current_cost()`)."""
    return cost_of(stored) != (cost or current_cost())


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches the stored hash (in constant time), at the cost the hash
    names."""
    cost = cost_of(stored)
    if cost is None:
        return False
    try:
        _, _, _, _, salt, key = stored.split("$")
        expected = base64.b64decode(key)
        actual = _scrypt(password, base64.b64decode(salt), cost)
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def dummy_hash() -> str:
    """Checked against when the account does not exist (or has no password), so that an
    unknown user costs the same time as a wrong password: made at the current cost."""
    return _dummy_hash(current_cost())


@functools.cache
def _dummy_hash(cost: ScryptCost) -> str:
    return hash_password(secrets.token_urlsafe(16), cost)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def is_token(secret: str) -> bool:
    return secret.startswith(TOKEN_PREFIX)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
