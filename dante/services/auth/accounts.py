"""Accounts: who may log in, with what role, and the digests that prove it.

Kept in the JetStream KV bucket `dante_accounts`, in the `DANTE` account, where only the
platform's service user reaches: it survives restarts, is shared by every platform process
(and replicated with the log on a cluster), and a name is claimed with one atomic `create`,
so two sign-ups for one name cannot both win. Secrets live here only as a scrypt hash (the
password) and SHA-256 digests (login tokens); never in the event log, never in a log line.

Opening an account also appends `AccountOpened` to the log, without any secret.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Literal

import msgspec
import structlog
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from dante.domain.rejection import Rejected
from dante.events.errors import ConcurrencyConflict
from dante.events.records import Append
from dante.events.store import EventStore
from dante.events.subjects import ACCOUNTS_BUCKET, subject_of
from dante.schemas import events as ev
from dante.schemas.identity import OPERATOR
from dante.services.auth.passwords import (
    WeakPassword,
    check_password_rules,
    dummy_hash,
    hash_password,
    is_token,
    new_token,
    token_digest,
    verify_password,
)
from dante.services.auth.permissions import Proof, valid_account_name

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext
    from nats.js.kv import KeyValue

log = structlog.get_logger(__name__)

AccountRole = Literal["renter", "provider", "operator"]
#: Login tokens kept per account; the oldest is forgotten (logged out) past this.
MAX_TOKENS: Final = 32
_TRIES: Final = 8


class LoginToken(msgspec.Struct, frozen=True, kw_only=True):
    digest: str
    label: str = ""
    created_at: datetime


class AccountRecord(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    role: AccountRole
    #: The scrypt hash of the password; the operator has none (it logs in with a token).
    password: str | None = None
    tokens: list[LoginToken] = msgspec.field(default_factory=list)
    created_at: datetime


_record: Final = msgspec.json.Decoder(AccountRecord)


def utcnow() -> datetime:
    return datetime.now(UTC)


def check_secret(record: AccountRecord | None, secret: str) -> Proof | None:
    """How `secret` proves the account (a password or one of its tokens), or None.

    Costs one scrypt unless the secret is a token, whether or not the account exists.
    """
    if is_token(secret):
        digest = token_digest(secret)
        tokens = record.tokens if record is not None else []
        # Compare with every token, so the time does not tell which one (or none) matched.
        matched = False
        for token in tokens:
            matched |= _equal(token.digest, digest)
        return "token" if matched else None
    stored = record.password if record is not None else None
    ok = verify_password(secret, stored or dummy_hash())
    return "password" if ok and stored is not None else None


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class AccountBook:
    """The accounts bucket."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self._js.key_value(ACCOUNTS_BUCKET)
        return self._kv

    async def get(self, name: str) -> AccountRecord | None:
        record, _ = await self._get(name)
        return record

    async def _get(self, name: str) -> tuple[AccountRecord | None, int]:
        kv = await self._bucket()
        try:
            entry = await kv.get(name)
        except KeyNotFoundError:
            return None, 0
        if entry.value is None:
            return None, entry.revision or 0
        return _record.decode(entry.value), entry.revision or 0

    async def create(self, record: AccountRecord) -> bool:
        """Claim the name; False when it is taken."""
        kv = await self._bucket()
        try:
            await kv.create(record.name, msgspec.json.encode(record))
        except KeyWrongLastSequenceError:
            return False
        return True

    async def change(
        self, name: str, change: Callable[[AccountRecord], AccountRecord]
    ) -> AccountRecord:
        """Apply `change` to the stored record with compare-and-set, retrying on a race."""
        kv = await self._bucket()
        for _ in range(_TRIES):
            record, revision = await self._get(name)
            if record is None:
                raise Rejected("forbidden", f"there is no account {name}")
            updated = change(record)
            try:
                await kv.update(name, msgspec.json.encode(updated), last=revision)
            except KeyWrongLastSequenceError:
                continue
            return updated
        raise Rejected("conflict", "the account changed concurrently; retry")

    async def issue_token(self, name: str, *, label: str = "", now: datetime | None = None) -> str:
        """A new login token for the account; only its digest is kept."""
        token = new_token()
        entry = LoginToken(digest=token_digest(token), label=label, created_at=now or utcnow())

        def add(record: AccountRecord) -> AccountRecord:
            tokens = [*record.tokens, entry][-MAX_TOKENS:]
            return msgspec.structs.replace(record, tokens=tokens)

        await self.change(name, add)
        return token

    async def revoke_token(self, name: str, token: str) -> bool:
        """Forget one login token; False when the account does not hold it."""
        digest = token_digest(token)
        found = False

        def drop(record: AccountRecord) -> AccountRecord:
            nonlocal found
            kept = [t for t in record.tokens if not _equal(t.digest, digest)]
            found = len(kept) != len(record.tokens)
            return msgspec.structs.replace(record, tokens=kept)

        await self.change(name, drop)
        return found

    async def ensure_operator(self, token: str, *, label: str, now: datetime | None = None) -> None:
        """The operator account exists and accepts `token` (what `dante up` gives its user)."""
        digest = token_digest(token)
        at = now or utcnow()
        await self.create(AccountRecord(name=OPERATOR, role="operator", created_at=at))

        def add(record: AccountRecord) -> AccountRecord:
            if any(_equal(t.digest, digest) for t in record.tokens):
                return record
            entry = LoginToken(digest=digest, label=label, created_at=at)
            return msgspec.structs.replace(record, tokens=[*record.tokens, entry][-MAX_TOKENS:])

        await self.change(OPERATOR, add)


async def open_account(
    book: AccountBook,
    store: EventStore,
    name: str,
    password: str,
    role: Literal["renter", "provider"],
    *,
    now: datetime | None = None,
) -> AccountRecord:
    """Open an account: claim the name with the password's hash, then log `AccountOpened`.

    The server-side way in (the sign-up service and `dante up --demo` use it). Opening the
    same account again with the same password and role is a harmless repeat (it finishes a
    sign-up that was cut off before its event landed); any other claim of a taken name is
    refused.
    """
    if not valid_account_name(name):
        raise Rejected(
            "invalid",
            "an account name has 2 to 32 characters: lower-case letters, digits, '-' and '_', "
            "starting with a letter, and is not one the platform keeps",
            "username",
        )
    try:
        check_password_rules(password)
    except WeakPassword as exc:
        raise Rejected("invalid", str(exc), "password") from None
    at = now or utcnow()
    hashed = await asyncio.to_thread(hash_password, password)
    record = AccountRecord(name=name, role=role, password=hashed, created_at=at)
    if not await book.create(record):
        existing = await book.get(name)
        same = (
            existing is not None
            and existing.role == role
            and existing.password is not None
            and await asyncio.to_thread(verify_password, password, existing.password)
        )
        if not same:
            raise Rejected("name_taken", f"the account name {name} is taken", "username")
        assert existing is not None
        record = existing
    await _log_opening(store, record, at)
    log.info("account.opened", account=name, role=role)
    return record


async def set_password(
    book: AccountBook,
    store: EventStore,
    name: str,
    password: str,
    role: Literal["renter", "provider"],
    *,
    now: datetime | None = None,
) -> AccountRecord:
    """Open the account, or give an existing one of that role a new password (server side
    only: the demo's own accounts, an operator's recovery). Its login tokens are revoked."""
    try:
        return await open_account(book, store, name, password, role, now=now)
    except Rejected as rejected:
        if rejected.code != "name_taken":
            raise
    hashed = await asyncio.to_thread(hash_password, password)

    def reset(record: AccountRecord) -> AccountRecord:
        if record.role != role:
            raise Rejected("name_taken", f"the account {name} is not a {role}", "username")
        return msgspec.structs.replace(record, password=hashed, tokens=[])

    record = await book.change(name, reset)
    log.info("account.password_set", account=name)
    return record


async def _log_opening(store: EventStore, record: AccountRecord, at: datetime) -> None:
    assert record.role != "operator"
    subject = subject_of("wallet", record.name)
    event = ev.AccountOpened(
        event_id=f"account:{record.name}:opened",
        at=at,
        cause=f"account:{record.name}",
        wallet_id=record.name,
        role=record.role,
    )
    for _ in range(_TRIES):
        version = await store.version(subject)
        if version and any(
            isinstance(r.event, ev.AccountOpened) for r in await store.load("wallet", record.name)
        ):
            return
        try:
            await store.append(Append(event=event, expected=version))
        except ConcurrencyConflict:
            continue
        return
    raise Rejected("conflict", "the wallet changed concurrently; retry")
