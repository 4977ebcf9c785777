"""Opening accounts through the narrow sign-up path, and what is kept about them."""

from __future__ import annotations

import asyncio

import pytest

from dante.client.accounts import new_nonce, sign_up
from dante.client.commands import Client, CommandError, new_command_id, request
from dante.client.connect import connect
from dante.client.credentials import signup_credential
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.schemas.values import RESERVED_ACCOUNTS
from tests.auth.conftest import Secured

pytestmark = pytest.mark.anyio


async def opened(secured: Secured) -> list[ev.AccountOpened]:
    return [
        r.event
        async for r in secured.platform.store.read()
        if isinstance(r.event, ev.AccountOpened)
    ]


async def test_signing_up_logs_the_account_without_its_secret(secured: Secured) -> None:
    await secured.sign_up("alice", "alice-pass")
    await secured.sign_up("bob", "bob-pass-1", "provider")
    events = await opened(secured)
    assert [(e.wallet_id, e.role) for e in events] == [("alice", "renter"), ("bob", "provider")]
    record = await secured.identity.book.get("alice")
    assert record is not None and record.role == "renter"
    assert record.password is not None and record.password.startswith(
        "scrypt$14$8$1$"
    )  # the tests' cost
    assert "alice-pass" not in record.password
    await secured.platform.settle()
    assert secured.platform.tail.world.wallet("bob").role == "provider"


async def test_a_taken_name_is_refused_and_a_repeat_is_harmless(secured: Secured) -> None:
    await secured.sign_up("alice", "alice-pass")
    with pytest.raises(CommandError) as caught:
        await secured.sign_up("alice", "other-pass")
    assert caught.value.code == "name_taken"
    with pytest.raises(CommandError):
        await secured.sign_up("alice", "alice-pass", "provider")
    await secured.sign_up("alice", "alice-pass")  # a retried sign-up
    assert len(await opened(secured)) == 1


async def test_two_sign_ups_for_one_name_cannot_both_win(secured: Secured) -> None:
    results = await asyncio.gather(
        secured.sign_up("alice", "first-pass"),
        secured.sign_up("alice", "second-pass"),
        return_exceptions=True,
    )
    assert sum(isinstance(r, CommandError) for r in results) == 1
    assert len(await opened(secured)) == 1


@pytest.mark.parametrize(
    ("name", "password"),
    [
        *[(reserved, "some-pass") for reserved in sorted(RESERVED_ACCOUNTS)],
        ("Alice", "some-pass"),
        ("a", "some-pass"),
        ("al.ice", "some-pass"),
        ("al*", "some-pass"),
        ("x" * 33, "some-pass"),
        ("alice", "short"),
        ("alice", "dtk_like-a-token"),
    ],
)
async def test_bad_names_and_passwords_are_refused(
    secured: Secured, name: str, password: str
) -> None:
    with pytest.raises(CommandError) as caught:
        await secured.sign_up(name, password)
    assert caught.value.code == "invalid"
    assert await opened(secured) == []


@pytest.mark.parametrize(
    ("name", "password", "says"),
    [
        ("a" * 300, "some-pass", "an account name has 2 to 32 characters"),
        ("", "some-pass", "an account name has 2 to 32 characters"),
        ("alice", "", "a password needs at least"),
        ("alice", "p" * 2000, "a password may have at most"),
    ],
)
async def test_a_name_or_password_out_of_bounds_is_told_the_rules(
    secured: Secured, name: str, password: str, says: str
) -> None:
    with pytest.raises(CommandError) as caught:
        await secured.sign_up(name, password)
    assert caught.value.code == "invalid" and says in caught.value.info.message
    assert caught.value.info.field == ("username" if name != "alice" else "password")
    assert await opened(secured) == []


async def test_a_signup_connection_can_do_nothing_else(secured: Secured) -> None:
    nonce = new_nonce()
    nc = await connect(secured.url, name="signup", credential=signup_credential(nonce))
    try:
        before = await secured.snapshot()
        for subject in (
            "dante.cmd.renter.signup.deposit",
            "dante.cmd.renter.alice.deposit",
            "dante.acct.alice.token",
            "dante.evt.wallet.alice",
            "$JS.API.STREAM.INFO.DANTE",
            "$JS.DANTE.API.DIRECT.GET.DANTE",
            "$SRV.PING",
        ):
            with pytest.raises(CommandError) as caught:
                await request(nc, subject, b"{}", timeout=3)
            assert caught.value.code == "forbidden"
        with pytest.raises(CommandError):
            await Client(nc, "renter", "signup", timeout=3).send(
                cmd.Deposit(command_id=new_command_id(), amount=1)
            )
        # It hears only its own inbox: not another sign-up's, nor anyone else's.
        errors: list[Exception] = []
        other = await connect(secured.url, name="other", credential=signup_credential(new_nonce()))

        async def collect(error: Exception) -> None:
            errors.append(error)

        spy = await connect(
            secured.url,
            name="spy",
            credential=signup_credential(new_nonce()),
            error_cb=collect,
        )
        try:
            await spy.subscribe(f"_INBOX_signup.{nonce}.>")
            await spy.subscribe("_INBOX_alice.>")
            await spy.flush()
            await asyncio.sleep(0.2)
            assert (
                sum("permissions violation for subscription" in str(e).lower() for e in errors) == 2
            )
            await sign_up(other, "carol", "carol-pass")
        finally:
            await other.close()
            await spy.close()
        await sign_up(nc, "alice", "alice-pass")
        after = await secured.snapshot()
        assert after[0] == before[0] + 2  # carol's and alice's AccountOpened, nothing else
    finally:
        await nc.close()
