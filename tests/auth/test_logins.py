"""Logging in against a real nats-server whose auth callout the platform answers."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from structlog.testing import capture_logs

from dante.cli.status import gather_status
from dante.client.accounts import issue_token, new_nonce, revoke_token
from dante.client.commands import Client, CommandError
from dante.client.connect import LoginRefused, connect
from dante.client.credentials import Credential, signup_credential
from dante.events.natsd import NatsServer
from dante.events.subjects import CLIENT_API_PREFIX
from dante.services.auth.limits import LoginLimits
from dante.services.auth.throttle import login_key
from tests.auth.conftest import Secured
from tests.funding import fund

pytestmark = pytest.mark.anyio


async def raw_refusal(url: str, user: str | None = None, password: str | None = None) -> str:
    """What nats-server itself answers a plain nats-py client (closed again afterwards)."""
    nc = NATS()
    try:
        await nc.connect(url, allow_reconnect=False, user=user, password=password)
    except NatsError as exc:
        return str(exc)
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
        if nc._transport is not None:
            nc._transport.close()  # type: ignore[no-untyped-call]
    raise AssertionError("connected")


async def refusal(secured: Secured, user: str, secret: str) -> tuple[str, float]:
    started = time.perf_counter()
    with pytest.raises(LoginRefused) as caught:
        await connect(secured.url, name="t", credential=Credential(username=user, secret=secret))
    return str(caught.value), time.perf_counter() - started


async def test_the_server_refuses_anonymous_connections(
    secured: Secured, auth_server: NatsServer
) -> None:
    assert "Authorization Violation" in await raw_refusal(auth_server.url)
    with pytest.raises(LoginRefused, match="not logged in"):
        await connect(secured.url, name="t", credential=None)


async def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(
    secured: Secured, auth_server: NatsServer
) -> None:
    await secured.sign_up("alice", "alice-pass")
    answers = [
        await raw_refusal(auth_server.url, user=user, password=secret)
        for user, secret in (("alice", "wrong-pass"), ("nobody", "alice-pass"))
    ]
    assert answers[0] == answers[1] == "nats: 'Authorization Violation'"
    # Both cost a scrypt: the time does not tell them apart either (generously).
    _, wrong = await refusal(secured, "bob", "wrong-pass")
    _, unknown = await refusal(secured, "carol", "wrong-pass")
    assert abs(wrong - unknown) < 0.5


async def test_repeated_failures_for_one_user_are_slowed_down_and_a_success_resets(
    secured: Secured,
) -> None:
    await secured.sign_up("alice", "alice-pass")
    # The throttle's own timing, without the delay every refusal gets.
    secured.identity.callout.gate.limits = LoginLimits(refusal_delay_ms=0)
    throttle = secured.identity.callout.throttle
    alice = login_key("127.0.0.1", "alice")  # from this address
    # Each attempt right after the last failure waits 0, 0.1, 0.2, 0.4, 0.8 s.
    times = [(await refusal(secured, "alice", "wrong-pass"))[1] for _ in range(5)]
    assert times[4] > times[0] + 0.5, times
    assert times[4] > times[2] > times[0], times
    assert throttle.delay(alice) == pytest.approx(1.6)
    # Sooner than that is refused unchecked, even with the right password.
    message, took = await refusal(secured, "alice", "alice-pass")
    assert "refused 'alice'" in message and took < 1.0
    # Another user is not held up by alice's failures.
    _, other = await refusal(secured, "bob", "wrong-pass")
    assert other < 1.0
    await asyncio.sleep(throttle.wait(alice))
    await secured.login("alice", "alice-pass")
    assert throttle.failures(alice) == 0


async def test_a_login_token_works_until_revoked_and_cannot_mint_another(
    secured: Secured,
) -> None:
    await secured.sign_up("alice", "alice-pass")
    with_password = await secured.login("alice", "alice-pass")
    issued = await issue_token(with_password, "alice", label="laptop")
    assert issued.role == "renter" and issued.token.startswith("dtk_")
    with_token = await secured.login("alice", issued.token)
    with pytest.raises(CommandError) as caught:
        await issue_token(with_token, "alice")
    assert caught.value.code == "forbidden"
    await revoke_token(with_token, "alice", issued.token)
    message, _ = await refusal(secured, "alice", issued.token)
    assert "refused 'alice'" in message


async def test_only_a_provider_account_logs_in_for_a_machine(secured: Secured) -> None:
    await secured.sign_up("alice", "alice-pass")
    await secured.sign_up("bob", "bob-pass-1", "provider")
    await secured.login("bob", "bob-pass-1", machine="prv-1")
    with pytest.raises(LoginRefused):
        await secured.login("alice", "alice-pass", machine="prv-1")
    with pytest.raises(LoginRefused):
        await secured.login("bob", "bob-pass-1", machine="bad.machine")


async def test_the_operator_logs_in_with_the_token_dante_up_gave_it(secured: Secured) -> None:
    operator = await secured.operator()
    report = await gather_status(operator, api_prefix=CLIENT_API_PREFIX)
    assert len(report["services"]) == 1
    assert report["stream"]["last_seq"] == await secured.platform.store.last_seq()
    with pytest.raises(LoginRefused):
        await secured.login("operator", "operator-guess")
    with pytest.raises(LoginRefused):
        await secured.login("operator", secured.installation.operator_token, machine="p")


async def test_a_signup_connection_needs_a_proper_nonce(secured: Secured) -> None:
    nc = await connect(secured.url, name="s", credential=signup_credential(new_nonce()))
    await nc.close()
    with pytest.raises(LoginRefused):
        await connect(secured.url, name="s", credential=signup_credential("short"))


async def test_passwords_and_tokens_never_reach_the_log_or_log_lines(secured: Secured) -> None:
    with capture_logs() as lines:
        await secured.sign_up("alice", "secret-alice-pass")
        nc = await secured.login("alice", "secret-alice-pass")
        issued = await issue_token(nc, "alice")
        await refusal(secured, "alice", "secret-wrong-pass")
        await fund(Client(nc, "renter", "alice"), 1_000_000)
    text = repr(lines)
    assert "secret-alice-pass" not in text and "secret-wrong-pass" not in text
    assert issued.token not in text
    async for _, _, _, data in secured.platform.store.read_raw():
        assert b"secret-alice-pass" not in data and issued.token.encode() not in data
