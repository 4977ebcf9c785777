"""The auth callout: nats-server asks it about every connection but the platform's own.

nats-server sends an authorization request JWT on `$SYS.REQ.USER.AUTH` (in the `DANTE`
account) with what the client presented. We answer with an authorization response JWT,
signed by the installation's issuer key (nats.conf trusts its public half), holding either
a user JWT (the connection's account `PUBLIC`, its name and its permissions) or an error.

Who may connect:
- `<account>` with the account's password or one of its login tokens: a renter, or a
  provider's owner (CLI);
- `<account>/<provider_id>` likewise, for a provider account only: that machine's agent,
  which may also heartbeat and read its own instructions;
- `operator` with the token `dante up` wrote for the user who started it;
- `signup` with a random nonce as password: may only ask to open an account (as many such
  connections from one address as its sign-up budget in the `AddressGate` allows).

Everything else is refused with the same answer, whatever was wrong. A password check
goes through the `AddressGate` (what one client address may cost: logins under way, a
failure budget, scrypts in turn) and the `Throttle` (repeated failures for one account from
one address are slowed down), both keyed on the address nats-server says the connection
comes from, so a guesser slows only itself. A login token is checked at once, never
throttled: nobody else's failures lock it out. A right password whose hash was made at an
older cost is rehashed at the current one, after the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, Final

import anyio
import msgspec
import structlog

from dante.schemas.identity import MACHINE_SEPARATOR, OPERATOR, SIGNUP_USER
from dante.services.auth.accounts import AccountBook, AccountRecord, check_secret
from dante.services.auth.gate import AddressGate, client_key
from dante.services.auth.jwt import REQUEST_AUDIENCE, JwtError, Signer, claims_of
from dante.services.auth.limits import ClientLimits
from dante.services.auth.passwords import (
    cost_of,
    current_cost,
    dummy_hash,
    hash_password,
    is_token,
    needs_rehash,
)
from dante.services.auth.permissions import (
    PUBLIC_ACCOUNT,
    Proof,
    Scope,
    permissions_for,
    valid_account_name,
    valid_machine,
    valid_nonce,
)
from dante.services.auth.throttle import Attempt, Throttle, login_key

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

log = structlog.get_logger(__name__)

AUTH_SUBJECT: Final = "$SYS.REQ.USER.AUTH"
QUEUE: Final = "dante-auth"
#: The one answer to every refusal: it must not tell an unknown user from a wrong secret.
REFUSED: Final = "invalid credentials"
#: Answer within this long: nats-server pings a client 2 s after it connects, and nats-py
#: 2.16 gives up on a connection whose login is still pending when that ping comes.
ANSWER_WITHIN_S: Final = 1.5
#: Answer this long before the server gives up on us.
_MARGIN_S: Final = 0.3
#: What one password check takes at scrypt N = 2^15 on a typical core; it doubles with N.
_HASH_S_AT_15: Final = 0.1


class _ConnectOptions(msgspec.Struct, kw_only=True):
    user: str = ""
    # `pass` in the wire format.
    password: str = msgspec.field(default="", name="pass")


class _ServerId(msgspec.Struct, kw_only=True):
    id: str


class _ClientInfo(msgspec.Struct, kw_only=True):
    #: The address the connection comes from.
    host: str = ""


class _Request(msgspec.Struct, kw_only=True):
    server_id: _ServerId
    user_nkey: str
    client_info: _ClientInfo = msgspec.field(default_factory=_ClientInfo)
    connect_opts: _ConnectOptions = msgspec.field(default_factory=_ConnectOptions)


class _Envelope(msgspec.Struct, kw_only=True):
    aud: str = ""
    exp: int = 0
    nats: _Request


class AuthCallout:
    """Answers nats-server's authorization requests; several instances share the load."""

    def __init__(
        self,
        nc: NATS,
        book: AccountBook,
        signer: Signer,
        *,
        throttle: Throttle | None = None,
        gate: AddressGate | None = None,
        client_limits: ClientLimits | None = None,
        concurrency: int = 256,
    ) -> None:
        self._nc = nc
        self._book = book
        self._signer = signer
        self.throttle = throttle or Throttle()
        self.gate = gate or AddressGate()
        self.client_limits = client_limits or ClientLimits()
        self._slots = asyncio.Semaphore(concurrency)
        #: How long one scrypt takes here, measured (a moving average).
        self.hash_s = _HASH_S_AT_15 * 2 ** (current_cost().log2_n - 15)
        self._tasks: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        await self.calibrate()
        sub = await self._nc.subscribe(AUTH_SUBJECT, queue=QUEUE, cb=self._on_request)
        await self._nc.flush()  # the server knows we answer before anyone is told so
        self.ready.set()
        log.info("callout.ready")
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await sub.unsubscribe()
            for task in list(self._tasks):
                task.cancel()

    async def _on_request(self, msg: Msg) -> None:
        # Callbacks of one subscription run one at a time: a slowed-down user must not hold
        # up everybody else's login.
        self._spawn(self._answer(msg))

    async def calibrate(self) -> float:
        """Time one password check at the current cost (the one an unknown user costs, made
        here once), so that from the first login on a check that cannot be answered in time
        is refused at once; warn when checks are too slow to answer within the window."""
        await asyncio.to_thread(dummy_hash)
        started = time.monotonic()
        await asyncio.to_thread(check_secret, None, "calibrating")
        took = time.monotonic() - started
        self.hash_s = took
        if took > ANSWER_WITHIN_S / 2:
            log.warning(
                "login.slow_hash",
                seconds=round(took, 2),
                log2_n=current_cost().log2_n,
                advice="password logins may be refused as busy on this machine; a lower "
                "$DANTE_SCRYPT_LOG2_N makes them cheaper (login tokens are unaffected)",
            )
        return took

    async def _answer(self, msg: Msg) -> None:
        try:
            envelope = msgspec.convert(claims_of(msg.data), _Envelope)
        except (JwtError, msgspec.ValidationError):
            log.warning("callout.bad_request")
            return  # not from a server: nothing to answer
        if envelope.aud != REQUEST_AUDIENCE:
            log.warning("callout.bad_request")
            return
        request = envelope.nats
        deadline = _deadline(envelope.exp)
        try:
            async with self._slots:
                scope = await self.authenticate(
                    request.connect_opts.user,
                    request.connect_opts.password,
                    deadline,
                    address=request.client_info.host,
                )
        except Exception:
            log.exception("callout.crash")
            scope = None
        if scope is None:
            await self._tarpit(deadline)
        body = self.response(request, scope)
        with contextlib.suppress(Exception):
            await msg.respond(body.encode())

    async def _tarpit(self, deadline: float) -> None:
        """Hold a refusal back (`LoginLimits.refusal_delay_ms`, within the login's window):
        a loop of attempts then makes one a second per connection, not hundreds."""
        wait = min(self.gate.limits.refusal_delay_ms / 1000, deadline - time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)

    async def authenticate(
        self, user: str, secret: str, deadline: float | None = None, *, address: str = ""
    ) -> Scope | None:
        """The scope of a connection from `address` presenting `user` and `secret`, or None
        to refuse."""
        if user == SIGNUP_USER:
            return self._signup(secret, address)
        account, _, machine = user.partition(MACHINE_SEPARATOR)
        if not secret or not _valid_user(account, machine):
            log.info("login.refused", reason="anonymous or malformed user")
            return None
        record = await self._check(account, secret, deadline, client_key(address))
        if record is None:
            return None
        proof: Proof = "token" if is_token(secret) else "password"
        if machine and record.role != "provider":
            log.info("login.refused", account=account, reason="only providers have machines")
            return None
        if record.role == "operator":
            return Scope(role="operator", account=OPERATOR, proof=proof)
        log.debug("login.accepted", account=account, machine=machine or None)
        return Scope(role=record.role, account=account, proof=proof, machine=machine or None)

    def _signup(self, nonce: str, address: str) -> Scope | None:
        if not valid_nonce(nonce):
            return None
        if not self.gate.admit_signup(client_key(address)):
            log.info("login.refused", address=address, reason="sign-ups from this address")
            return None
        return Scope(role="signup", account=SIGNUP_USER, proof="nonce", nonce=nonce)

    async def _check(
        self, account: str, secret: str, deadline: float | None, address: str
    ) -> AccountRecord | None:
        """The account if `secret` proves it; None otherwise. A token is checked at once; a
        password after the gate and the throttle let it (else refused unchecked)."""
        if is_token(secret):
            record = await self._book.get(account)
            if check_secret(record, secret) is None or record is None:
                log.info("login.refused", account=account, reason="wrong token or unknown")
                return None
            return record
        with self.gate.admit(address) as admitted:
            if not admitted:
                log.info("login.refused", account=account, address=address, reason="busy")
                return None
            key = login_key(address, account)
            async with self.throttle.attempt(key, deadline=deadline) as attempt:
                if not attempt.allowed:
                    log.info("login.refused", account=account, address=address, reason="throttled")
                    return None
                return await self._check_password(account, secret, deadline, address, attempt)

    async def _check_password(
        self,
        account: str,
        secret: str,
        deadline: float | None,
        address: str,
        attempt: Attempt,
    ) -> AccountRecord | None:
        if not self.gate.reserve(address):
            log.info("login.refused", account=account, address=address, reason="failure budget")
            return None
        checked = False
        try:
            record = await self._book.get(account)
            within = None if deadline is None else deadline - time.monotonic() - self.hash_s
            if within is not None and within <= 0:
                log.info("login.refused", account=account, address=address, reason="busy")
                return None
            async with self.gate.hashing.take(address, within=within) as slot:
                if not slot:
                    log.info("login.refused", account=account, address=address, reason="busy")
                    return None
                started = time.monotonic()
                proof = await asyncio.to_thread(check_secret, record, secret)
                self.hash_s = 0.8 * self.hash_s + 0.2 * (time.monotonic() - started)
            checked = True
            if proof is None or record is None:
                attempt.failed()
                log.info(
                    "login.refused",
                    account=account,
                    address=address,
                    reason="wrong secret or unknown",
                )
                return None
            self.gate.refund(address)
            attempt.succeeded()
            if record.password is not None and needs_rehash(record.password):
                self._spawn(self._rehash(account, secret, record.password, address))
            return record
        finally:
            if not checked:
                self.gate.refund(address)  # nothing was checked: nothing to count

    async def _rehash(self, account: str, password: str, old: str, address: str) -> None:
        """Store a new hash of a right password, at the current cost, unless the password
        changed meanwhile (one more scrypt, in the address's turn like a check)."""
        async with self.gate.hashing.take(address):
            hashed = await asyncio.to_thread(hash_password, password)

        def replace(record: AccountRecord) -> AccountRecord:
            if record.password != old:
                return record
            return msgspec.structs.replace(record, password=hashed)

        try:
            await self._book.change(account, replace)
        except Exception:
            log.exception("login.rehash_failed", account=account)
            return
        before = cost_of(old)
        log.info(
            "login.rehashed",
            account=account,
            log2_n=current_cost().log2_n,
            was=None if before is None else before.log2_n,
        )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def response(self, request: _Request, scope: Scope | None) -> str:
        """The signed answer to the server: a user JWT for `scope`, or the refusal."""
        nats: dict[str, Any] = {"type": "authorization_response", "version": 2}
        if scope is None:
            nats["error"] = REFUSED
        else:
            nats["jwt"] = self._user_jwt(request.user_nkey, scope)
        return self._signer.sign(
            {"sub": request.user_nkey, "aud": request.server_id.id, "nats": nats}
        )

    def _user_jwt(self, user_nkey: str, scope: Scope) -> str:
        claims: dict[str, Any] = {
            "sub": user_nkey,
            # Outside operator mode the audience names the account the user is placed in.
            "aud": PUBLIC_ACCOUNT,
            "name": scope.user_name,
            # No expiry: nats-py 2.16 closes a client for good when its user JWT expires,
            # which would stop agents. A revoked login's connections are closed instead
            # (`dante.services.auth.sessions`), and refused when they reconnect.
            "nats": {
                "type": "user",
                "version": 2,
                **permissions_for(scope).claims(),
                **self.client_limits.claims(),
            },
        }
        return self._signer.sign(claims)


def _valid_user(account: str, machine: str) -> bool:
    if not account or not (account == OPERATOR or valid_account_name(account)):
        return False
    return not machine or valid_machine(machine)


def _deadline(exp: int) -> float:
    """When the answer must be sent, on the throttle's clock: soon, and before the request
    expires (its `exp` is on the wall clock)."""
    soon = time.monotonic() + ANSWER_WITHIN_S
    if not exp:
        return soon
    return min(soon, time.monotonic() + (exp - time.time()) - _MARGIN_S)
