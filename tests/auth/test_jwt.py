from __future__ import annotations

import base64

import msgspec
import nacl.signing
import nkeys  # type: ignore[import-untyped]
import pytest

from dante.services.auth.jwt import JwtError, Signer, claims_of, new_account_seed


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _raw_public_key(public: str) -> bytes:
    raw = base64.b32decode(public + "=" * (-len(public) % 8))
    return raw[1:-2]  # prefix byte, 32 key bytes, crc16


def test_a_signed_jwt_carries_its_issuer_and_verifies_with_its_key() -> None:
    signer = Signer(new_account_seed())
    assert signer.public_key.startswith("A") and len(signer.public_key) == 56
    token = signer.sign({"sub": "UABC", "nats": {"type": "user", "version": 2}})
    header, claims, signature = token.split(".")
    assert msgspec.json.decode(_unb64(header)) == {"typ": "JWT", "alg": "ed25519-nkey"}
    decoded = claims_of(token)
    assert decoded["iss"] == signer.public_key and decoded["sub"] == "UABC"
    assert decoded["jti"] and decoded["iat"] > 0
    key = nacl.signing.VerifyKey(_raw_public_key(signer.public_key))
    key.verify(f"{header}.{claims}".encode(), _unb64(signature))


def test_the_issuer_must_be_an_account_key() -> None:
    user_seed = nkeys.encode_seed(bytes(32), nkeys.PREFIX_BYTE_USER).decode()
    with pytest.raises(JwtError, match="account"):
        Signer(user_seed)
    with pytest.raises(JwtError):
        Signer("not a seed")


@pytest.mark.parametrize("token", ["", "a.b", "e30.e30.e30", "!!.!!.!!"])
def test_garbage_is_not_a_jwt(token: str) -> None:
    with pytest.raises(JwtError):
        claims_of(token)
