from __future__ import annotations

import pytest

from dante.services.auth.accounts import AccountRecord, LoginToken, check_secret
from dante.services.auth.limits import SCRYPT_VAR, LimitError
from dante.services.auth.passwords import (
    DEFAULT_COST,
    ScryptCost,
    WeakPassword,
    check_password_rules,
    cost_of,
    current_cost,
    hash_password,
    is_token,
    needs_rehash,
    new_token,
    token_digest,
    verify_password,
)
from tests.factories import NOW

FAST = ScryptCost(log2_n=10)


def test_a_hash_is_salted_scrypt_and_verifies_only_its_password() -> None:
    first, second = hash_password("correct horse", FAST), hash_password("correct horse", FAST)
    assert first != second  # salted
    assert first.startswith("scrypt$10$8$1$")
    assert "correct horse" not in first
    assert verify_password("correct horse", first)
    assert not verify_password("correct horsE", first)


def test_the_default_cost_follows_current_guidance(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real default, not the tests' cheaper one: N = 2^17, r = 8, p = 1 (128 MiB).
    monkeypatch.delenv(SCRYPT_VAR)
    assert current_cost() == ScryptCost(17, 8, 1) == DEFAULT_COST
    stored = hash_password("pw-pw-pw-pw")
    assert stored.startswith("scrypt$17$8$1$")
    assert verify_password("pw-pw-pw-pw", stored)
    assert not needs_rehash(stored)


def test_the_operator_sets_the_cost_and_older_hashes_still_verify(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SCRYPT_VAR, "11")
    assert hash_password("pw-pw-pw-pw").startswith("scrypt$11$8$1$")
    # A hash of an earlier installation (2^10 here) verifies at its own cost, and is due
    # for a rehash at the current one.
    older = hash_password("pw-pw-pw-pw", FAST)
    assert verify_password("pw-pw-pw-pw", older)
    assert needs_rehash(older)
    assert cost_of(older) == FAST


@pytest.mark.parametrize("value", ["9", "23", "big", "-1"])
def test_an_unusable_cost_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(SCRYPT_VAR, value)
    with pytest.raises(LimitError, match=SCRYPT_VAR):
        current_cost()


@pytest.mark.parametrize("stored", ["", "bcrypt$1$2$3$4$5", "scrypt$99$8$1$AA==$AA==", "x$y"])
def test_a_damaged_or_foreign_hash_never_verifies(stored: str) -> None:
    assert not verify_password("anything", stored)


@pytest.mark.parametrize("password", ["short", "dtk_looks-like-a-token", "x" * 1025])
def test_password_rules(password: str) -> None:
    with pytest.raises(WeakPassword):
        check_password_rules(password)


def test_tokens_are_random_and_kept_as_digests() -> None:
    token = new_token()
    assert is_token(token) and token != new_token()
    record = AccountRecord(
        name="alice",
        role="renter",
        password=hash_password("alice-pass", FAST),
        tokens=[LoginToken(digest=token_digest(token), created_at=NOW)],
        created_at=NOW,
    )
    assert check_secret(record, token) == "token"
    assert check_secret(record, new_token()) is None
    assert check_secret(record, "alice-pass") == "password"
    assert check_secret(record, "wrong-pass") is None
    assert check_secret(None, "alice-pass") is None
    assert check_secret(None, token) is None
