"""Sign-ups cannot be used to fill the platform with accounts: one address opens as many
sign-up connections as its budget allows, and one connection opens one account, in a few
tries. Driven through a real nats-server and the platform's auth callout."""

from __future__ import annotations

import pytest

from dante.client.accounts import new_nonce, sign_up
from dante.client.commands import CommandError
from dante.client.connect import LoginRefused, connect
from dante.client.credentials import signup_credential
from dante.domain.rejection import Rejected
from dante.services.auth.limits import SIGNUP_TRIES, LoginLimits
from dante.services.auth.service import SignUpTries
from tests.auth.conftest import Secured
from tests.auth.test_accounts import opened

pytestmark = pytest.mark.anyio


async def test_one_sign_up_connection_opens_one_account(secured: Secured) -> None:
    nc = await connect(secured.url, name="signup", credential=signup_credential(new_nonce()))
    try:
        await sign_up(nc, "alice", "alice-pass")
        before = await secured.snapshot()
        with pytest.raises(CommandError) as caught:
            await sign_up(nc, "carol", "carol-pass")
        assert caught.value.code == "quota_exceeded"
        assert "opened the account alice" in caught.value.info.message
        assert await secured.identity.book.get("carol") is None
        assert await secured.snapshot() == before
        # Asking again for the account it opened (its answer lost, say) is harmless.
        again = await sign_up(nc, "alice", "alice-pass")
        assert again.username == "alice"
    finally:
        await nc.close()
    # A new connection opens the next one.
    await secured.sign_up("carol", "carol-pass")
    assert [e.wallet_id for e in await opened(secured)] == ["alice", "carol"]
    await secured.audit_clean()


async def test_a_sign_up_connection_has_a_few_tries(secured: Secured) -> None:
    await secured.sign_up("alice", "alice-pass")
    nc = await connect(secured.url, name="signup", credential=signup_credential(new_nonce()))
    try:
        for _ in range(SIGNUP_TRIES):  # the name is taken: each try costs a password hash
            with pytest.raises(CommandError) as caught:
                await sign_up(nc, "alice", "guess-pass")
            assert caught.value.code == "name_taken"
        before = await secured.snapshot()
        with pytest.raises(CommandError) as caught:
            await sign_up(nc, "dave", "dave-pass")
        assert caught.value.code == "quota_exceeded"
        assert f"made its {SIGNUP_TRIES} tries" in caught.value.info.message
        assert await secured.identity.book.get("dave") is None
        assert await secured.snapshot() == before
    finally:
        await nc.close()


async def test_one_address_opens_as_many_sign_up_connections_as_its_budget(
    secured: Secured,
) -> None:
    secured.identity.callout.gate.limits = LoginLimits(
        signups_per_address=2, signups_per_hour=1, refusal_delay_ms=0
    )
    await secured.sign_up("alice", "alice-pass")
    await secured.sign_up("bob", "bob-pass-1")
    before = await secured.snapshot()
    with pytest.raises(LoginRefused, match="too many accounts were opened from this address"):
        await secured.sign_up("mallory", "mallory-pass")
    assert await secured.identity.book.get("mallory") is None
    assert await secured.snapshot() == before
    # The accounts opened from there log in as ever: only sign-ups are limited.
    alice = await secured.login("alice", "alice-pass")
    assert alice.is_connected
    await secured.audit_clean()


async def test_tries_are_counted_per_connection_repeats_included() -> None:
    tries = SignUpTries(tries=3)
    async with tries.attempt("n1", "alice"):
        pass  # failed: not marked opened
    async with tries.attempt("n1", "alice") as opened_:
        opened_()
    with pytest.raises(Rejected, match="opened the account alice"):
        async with tries.attempt("n1", "bob"):
            pass
    async with tries.attempt("n1", "alice"):  # the repeat of the one it opened
        pass
    with pytest.raises(Rejected, match="made its 3 tries"):
        async with tries.attempt("n1", "alice"):  # a repeat costs a hash: it counts
            pass
    # Another connection starts afresh.
    async with tries.attempt("n2", "bob") as opened_:
        opened_()
