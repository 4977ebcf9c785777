"""The permission table, as data: what each kind of connection may publish and subscribe to."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dante.events.subjects import agent_consumer_name
from dante.services.auth.permissions import Scope, permissions_for

OWN = st.from_regex(r"\A[a-z][a-z0-9_-]{1,31}\Z")
PID = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,63}\Z")


def test_a_renter_sends_only_its_own_commands_and_reads_only_its_inbox() -> None:
    allowed = permissions_for(Scope(role="renter", account="alice", proof="password"))
    assert allowed.publish == (
        "dante.cmd.renter.alice.>",
        "dante.acct.alice.logout",
        "dante.acct.alice.token",
    )
    assert allowed.subscribe == ("_INBOX_alice.>", "dante.reply.alice.*")


def test_a_token_cannot_mint_tokens() -> None:
    allowed = permissions_for(Scope(role="renter", account="alice", proof="token"))
    assert "dante.acct.alice.token" not in allowed.publish


def test_a_providers_machine_reaches_only_its_own_heartbeat_and_instructions() -> None:
    allowed = permissions_for(Scope(role="provider", account="bob", proof="token", machine="prv-1"))
    assert set(allowed.publish) == {
        "dante.cmd.provider.bob.>",
        "dante.cmd.renter.bob.balance",
        "dante.cmd.renter.bob.history",
        "dante.cmd.renter.bob.statement",
        "dante.cmd.renter.bob.chain",
        "dante.acct.bob.logout",
        "$KV.dante_heartbeats.bob.prv-1",
        "$JS.DANTE.API.CONSUMER.MSG.NEXT.DANTE_DISPATCH.agent~bob~prv-1",
        "$JS.ACK.DANTE_DISPATCH.agent~bob~prv-1.>",
    }
    assert allowed.subscribe == ("_INBOX_bob.>", "dante.reply.bob.*")


def test_the_operator_reads_and_asks_but_never_writes() -> None:
    allowed = permissions_for(Scope(role="operator", account="operator", proof="token"))
    assert set(allowed.publish) == {
        "dante.cmd.operator.operator.>",
        "$SRV.>",
        "$JS.DANTE.API.STREAM.INFO.DANTE",
        "$JS.DANTE.API.DIRECT.GET.DANTE",
        "$JS.DANTE.API.DIRECT.GET.DANTE.>",
    }


def test_a_signup_may_only_ask_to_sign_up() -> None:
    nonce = "0123456789abcdef0123456789abcdef"
    allowed = permissions_for(Scope(role="signup", account="signup", proof="nonce", nonce=nonce))
    assert allowed.publish == (f"dante.acct.signup.{nonce}",)
    assert allowed.subscribe == (f"_INBOX_signup.{nonce}.>", f"dante.reply.signup.{nonce}.*")


def test_nobody_but_the_platform_may_write_the_log_or_change_streams() -> None:
    scopes = [
        Scope(role="renter", account="alice", proof="password"),
        Scope(role="provider", account="bob", proof="password", machine="p"),
        Scope(role="operator", account="operator", proof="token"),
        Scope(role="signup", account="signup", proof="nonce", nonce="a" * 22),
    ]
    for scope in scopes:
        for subject in permissions_for(scope).publish:
            assert not subject.startswith(("dante.evt", "$JS.API", "dante.agent"))
            assert ".STREAM." not in subject or subject.endswith("STREAM.INFO.DANTE")
            assert "CONSUMER.CREATE" not in subject and "CONSUMER.DELETE" not in subject


@given(OWN, PID, OWN, PID)
def test_no_two_machines_share_a_consumer(a: str, p: str, b: str, q: str) -> None:
    if (a, p) != (b, q):
        assert agent_consumer_name(a, p) != agent_consumer_name(b, q)


def test_the_separator_keeps_hyphenated_names_apart() -> None:
    assert agent_consumer_name("bob", "x-1") != agent_consumer_name("bob-x", "1")
