"""Password hashes (scrypt, salted, slow) and login tokens (random, stored as digests).

A password is kept only as `scrypt$<log2 n>$<r>$<p>$<salt>$<hash>` (base64), so the cost can
be raised later without invalidating stored hashes. N = 2^15, r = 8, p = 1 takes about
0.1 s and 32 MiB per check: cheap for one login, expensive for a guesser with the hash.

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
    log2_n: int = 15
    r: int = 8
    p: int = 1

    @property
    def maxmem(self) -> int:
        # scrypt needs 128 * r * n bytes; leave room for the rest.
        return 2 * 128 * self.r * (1 << self.log2_n) + (1 << 20)


DEFAULT_COST: Final = ScryptCost()


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


def hash_password(password: str, cost: ScryptCost = DEFAULT_COST) -> str:
    """A salted scrypt hash of `password`, with its parameters, as one string."""
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(password, salt, cost)
    return f"{_SCHEME}${cost.log2_n}${cost.r}${cost.p}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches the stored hash (in constant time)."""
    try:
        scheme, log2_n, r, p, salt, key = stored.split("$")
        cost = ScryptCost(int(log2_n), int(r), int(p))
        if scheme != _SCHEME or not 10 <= cost.log2_n <= 22:
            return False
        expected = base64.b64decode(key)
        actual = _scrypt(password, base64.b64decode(salt), cost)
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def dummy_hash() -> str:
    """Checked against when the account does not exist (or has no password), so that an
    unknown user costs the same time as a wrong password."""
    return hash_password(secrets.token_urlsafe(16))


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def is_token(secret: str) -> bool:
    return secret.startswith(TOKEN_PREFIX)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
