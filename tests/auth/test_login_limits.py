"""A hostile client's logins against the real nats-server: it slows only itself.

The attacks come from their own address (127.0.0.x: every one is this machine's, see
tests/auth/attack.py and relay.py); the legitimate logins from others, or, for login
tokens, from the attacker's own. The legitimate logins' latencies are measured in
bench/logins.py; here they must all succeed.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest
from structlog.testing import capture_logs

from dante.client.accounts import issue_token
from dante.client.connect import LoginRefused, connect
from dante.client.credentials import Credential
from dante.events.natsd import NatsServer
from dante.services.auth.limits import SCRYPT_VAR, LoginLimits
from dante.services.auth.passwords import cost_of
from dante.services.auth.throttle import login_key
from tests.auth.attack import Tally, hammer, raw_login
from tests.auth.conftest import Secured
from tests.auth.relay import Relay

pytestmark = pytest.mark.anyio

HOST = "127.0.0.1"


async def login_from(
    secured: Secured, server: NatsServer, source: str, credential: Credential
) -> float:
    """Log in through a relay from `source` with nats-py, as the CLI and the agent do; how
    long it took (raises `LoginRefused`)."""
    assert server.client_port is not None
    async with Relay(HOST, server.client_port, source) as relay:
        started = time.monotonic()
        nc = await connect(relay.url, name="t", credential=credential)
        took = time.monotonic() - started
        await nc.close()
    return took


async def test_wrong_passwords_from_one_address_slow_only_that_address(
    secured: Secured, auth_server: NatsServer
) -> None:
    await secured.sign_up("bob", "bob-pass-1", "provider")
    owner = await secured.login("bob", "bob-pass-1")
    token = (await issue_token(owner, "bob", label="agent")).token
    await owner.close()
    assert auth_server.client_port is not None
    port, attacker = auth_server.client_port, "127.0.0.66"
    throttle = secured.identity.callout.throttle

    # Two loops of wrong passwords for bob, as fast as the server answers them.
    stop, tally = asyncio.Event(), Tally()
    attack = asyncio.create_task(
        hammer(
            HOST, port, "bob", "wrong-pass", source=attacker, until=stop, parallel=2, tally=tally
        )
    )
    for _ in range(200):
        if throttle.failures(login_key(attacker, "bob")) >= 4:
            break
        await asyncio.sleep(0.05)
    assert throttle.failures(login_key(attacker, "bob")) >= 4
    # Bob's right password from his own address: in, every time.
    for _ in range(5):
        await secured.login("bob", "bob-pass-1")
    # Bob's agent with its login token, from the attacker's very address: in.
    await login_from(secured, auth_server, attacker, Credential("bob", token).for_machine("prv-1"))
    # Bob's agent with the password, from a third address: in.
    await login_from(
        secured, auth_server, "127.0.0.67", Credential("bob", "bob-pass-1").for_machine("prv-2")
    )
    for _ in range(200):  # the attack goes on a while longer
        if tally.tries > 20:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await attack
    assert tally.tries > 20 and tally.let_in == 0
    # The guesser is slowed down: even bob's right password is refused from there now.
    assert not await raw_login(HOST, port, "bob", "bob-pass-1", source=attacker)
    assert throttle.failures(login_key("127.0.0.1", "bob")) == 0
    assert throttle.failures(login_key("127.0.0.67", "bob")) == 0
    await secured.audit_clean()


async def test_a_spray_of_random_names_leaves_other_addresses_logging_in(
    secured: Secured, auth_server: NatsServer
) -> None:
    await secured.sign_up("alice", "alice-pass")
    assert auth_server.client_port is not None
    port, sprayer = auth_server.client_port, "127.0.0.77"
    gate = secured.identity.callout.gate
    gate.limits = limits = LoginLimits(failures_per_address=8)  # spent within the test
    names = [f"x{secrets.token_hex(6)}" for _ in range(100_000)]
    with capture_logs() as lines:
        started = time.monotonic()
        attack = asyncio.create_task(
            hammer(
                HOST,
                port,
                names,
                "guess-pass",
                source=sprayer,
                until=started + 5,
                parallel=80,
            )
        )
        await asyncio.sleep(0.5)
        refused = 0
        for _ in range(10):
            try:
                await login_from(
                    secured, auth_server, "127.0.0.78", Credential("alice", "alice-pass")
                )
            except LoginRefused:
                refused += 1
        tally = await attack
        took = time.monotonic() - started
    assert refused == 0
    assert tally.tries > 80 and tally.let_in == 0
    # Scrypts spent on the sprayer: its failure budget and what refilled meanwhile, no more;
    # every other attempt was refused unchecked.
    checked = [
        line
        for line in lines
        if line.get("reason") == "wrong secret or unknown" and line.get("address") == sprayer
    ]
    allowed = limits.failures_per_address + limits.failures_per_minute * took / 60
    assert 0 < len(checked) <= allowed + 1
    assert tally.tries > 2 * len(checked)
    unchecked = [line for line in lines if line.get("reason") in ("failure budget", "busy")]
    assert len(unchecked) > len(checked)
    await secured.audit_clean()


async def test_logins_under_way_from_one_address_are_bounded(
    secured: Secured, auth_server: NatsServer
) -> None:
    gate = secured.identity.callout.gate
    gate.limits = LoginLimits(pending_per_address=3, failures_per_address=1000)
    assert auth_server.client_port is not None
    port = auth_server.client_port
    with capture_logs() as lines:
        results = await asyncio.gather(
            *(raw_login(HOST, port, f"n{i}x", "guess-pass", source="127.0.0.88") for i in range(40))
        )
    assert not any(results)
    busy = [line for line in lines if line.get("reason") == "busy"]
    assert len(busy) >= 20  # the rest were never checked
    assert gate.pending("127.0.0.88") == 0


async def test_a_right_password_with_an_older_hash_is_rehashed_at_the_current_cost(
    secured: Secured, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SCRYPT_VAR, "11")
    await secured.sign_up("carol", "carol-pass")
    book = secured.identity.book
    record = await book.get("carol")
    assert record is not None and record.password is not None
    assert cost_of(record.password) is not None and record.password.startswith("scrypt$11$")
    monkeypatch.setenv(SCRYPT_VAR, "12")
    await secured.login("carol", "carol-pass")  # the older hash still verifies
    for _ in range(100):
        record = await book.get("carol")
        assert record is not None and record.password is not None
        if record.password.startswith("scrypt$12$"):
            break
        await asyncio.sleep(0.05)
    assert record.password is not None and record.password.startswith("scrypt$12$")
    await secured.login("carol", "carol-pass")  # and the new one verifies
    with pytest.raises(LoginRefused):
        await secured.login("carol", "wrong-pass")


async def test_password_checks_too_slow_to_answer_in_time_are_refused_and_tokens_still_work(
    secured: Secured, monkeypatch: pytest.MonkeyPatch
) -> None:
    await secured.sign_up("dave", "dave-pass-1")
    owner = await secured.login("dave", "dave-pass-1")
    token = (await issue_token(owner, "dave")).token
    callout = secured.identity.callout
    # A machine where one check takes longer than the answer window: `calibrate` says so.
    monkeypatch.setattr("dante.services.auth.callout.ANSWER_WITHIN_S", 0.0001)
    with capture_logs() as lines:
        took = await callout.calibrate()
    assert took > 0 and callout.hash_s == took
    assert any(line["event"] == "login.slow_hash" for line in lines)
    monkeypatch.undo()
    callout.gate.limits = LoginLimits(refusal_delay_ms=0)  # "at once" means before any check
    callout.hash_s = 10.0  # as if each check took 10 s
    started = time.monotonic()
    with pytest.raises(LoginRefused):
        await secured.login("dave", "dave-pass-1")
    assert time.monotonic() - started < 1.0  # at once, not after a late check
    await secured.login("dave", token)  # a token needs no scrypt


async def test_a_refusal_is_held_back_so_a_loop_of_attempts_slows_to_one_a_second(
    secured: Secured, auth_server: NatsServer
) -> None:
    await secured.sign_up("alice", "alice-pass")
    assert auth_server.client_port is not None
    port = auth_server.client_port
    delay = secured.identity.callout.gate.limits.refusal_delay_ms / 1000
    assert delay == 1.0  # the default
    started = time.monotonic()
    assert not await raw_login(HOST, port, "alice", "wrong-pass", source="127.0.0.91")
    assert delay - 0.05 <= time.monotonic() - started < delay + 0.5
    # Nothing waits for a login that is let in.
    started = time.monotonic()
    assert await raw_login(HOST, port, "alice", "alice-pass", source="127.0.0.91")
    assert time.monotonic() - started < delay - 0.2
    # 4 loops of random names for 3 s: about 4 attempts a second, not hundreds.
    names = [f"x{secrets.token_hex(6)}" for _ in range(10_000)]
    tally = await hammer(
        HOST, port, names, "guess-pass", source="127.0.0.92",
        until=time.monotonic() + 3.0, parallel=4,
    )  # fmt: skip
    assert tally.let_in == 0 and 4 <= tally.tries <= 4 * 4 + 4, tally.tries
    assert min(tally.times) >= delay - 0.05
