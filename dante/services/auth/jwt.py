"""NATS JWTs, just enough for auth callout: decode the server's request, sign our answer.

A NATS JWT is `base64url(header).base64url(claims).base64url(signature)`, unpadded, with the
header `{"typ":"JWT","alg":"ed25519-nkey"}` and an ed25519 signature over the first two
parts by the issuer's nkey. Claims carry the NATS-specific part under `nats`, with a `type`
and `version: 2`.

The request arrives on `$SYS.REQ.USER.AUTH` in the callout's own account, where only the
platform's service users can publish, so its server signature is not re-verified here: the
key it would be checked against comes inside the same message.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from typing import Any, Final

import msgspec
import nkeys  # type: ignore[import-untyped]

_HEADER: Final = {"typ": "JWT", "alg": "ed25519-nkey"}
REQUEST_AUDIENCE: Final = "nats-authorization-request"


class JwtError(ValueError):
    """Not a well-formed NATS JWT of the expected kind."""


def new_account_seed() -> str:
    """A fresh account nkey seed (`SA…`): the callout signs with it, nats.conf trusts its key."""
    seed: bytes = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT)
    return seed.decode()


class Signer:
    """An account nkey that signs JWTs."""

    def __init__(self, seed: str) -> None:
        try:
            self._keys = nkeys.from_seed(seed.encode())
            public: bytes = self._keys.public_key
        except Exception as exc:  # nkeys raises its own untyped errors
            raise JwtError("not an nkey seed") from exc
        if not public.startswith(b"A"):
            raise JwtError("the callout issuer must be an account nkey (its seed starts with SA)")
        self.public_key = public.decode()

    def sign(self, claims: dict[str, Any]) -> str:
        """Encode and sign `claims` as issued now by this key."""
        body = dict(claims)
        body["iss"] = self.public_key
        body["iat"] = int(time.time())
        body.pop("jti", None)
        # Like nats-io/jwt: the id is a digest of the claims without it.
        digest = hashlib.sha256(msgspec.json.encode(body)).digest()
        body["jti"] = base64.b32encode(digest).decode().rstrip("=")
        signing_input = f"{_b64(msgspec.json.encode(_HEADER))}.{_b64(msgspec.json.encode(body))}"
        signature: bytes = self._keys.sign(signing_input.encode())
        return f"{signing_input}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims_of(token: str | bytes) -> dict[str, Any]:
    """The claims of a JWT, unverified (see the module's note)."""
    text = token.decode() if isinstance(token, bytes) else token
    parts = text.strip().split(".")
    if len(parts) != 3:
        raise JwtError("a JWT has three parts")
    try:
        header = msgspec.json.decode(_unb64(parts[0]))
        claims = msgspec.json.decode(_unb64(parts[1]))
    except (ValueError, msgspec.DecodeError) as exc:
        raise JwtError("undecodable JWT") from exc
    if not isinstance(header, dict) or header.get("alg") != _HEADER["alg"]:
        raise JwtError("not an nkey-signed JWT")
    if not isinstance(claims, dict):
        raise JwtError("JWT claims are not an object")
    return claims
