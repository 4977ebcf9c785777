"""Which credential a command (or the agent) connects with, and where logins are kept.

In order: DANTE_USERNAME and DANTE_PASSWORD when set (scripts, several identities on one
machine), else the login `dante login` stored for that platform's URL. The operator's
commands use the operator credential `dante up` wrote for the user who started it.

Both files live in the user's config folder, $XDG_CONFIG_HOME/dante or ~/.config/dante
(mode 0700), readable by their owner only (0600):
- `credentials.json`: per platform URL, the account name and a login token. A token, not
  the password: it does not give away a password people reuse elsewhere, it cannot mint
  further tokens, `dante logout` revokes it on the platform, and it is checked without a
  scrypt, so reconnecting agents cost the platform little.
- `operator.json`: per platform URL, the operator's token.
A credential is only ever sent to the URL it was stored for.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from dante.schemas.identity import (
    MACHINE_SEPARATOR,
    OPERATOR,
    PLATFORM_USER,
    SIGNUP_USER,
    SYSTEM_USER,
    inbox_prefix,
    reply_prefix,
)

USERNAME_VAR: Final = "DANTE_USERNAME"
PASSWORD_VAR: Final = "DANTE_PASSWORD"  # noqa: S105 (a name, not a secret)
LOGINS_FILE: Final = "credentials.json"
OPERATOR_FILE: Final = "operator.json"

Source = Literal["environment", "login", "operator", "platform", "signup", "given"]


class CredentialError(Exception):
    """The credential settings cannot be used as they are."""


@dataclass(frozen=True, slots=True, repr=False)
class Credential:
    """A user name and its secret (a password or a login token), and where they came from."""

    username: str
    secret: str
    source: Source = "given"
    role: str | None = None
    #: An agent's provider id: it connects as `<username>/<machine>`.
    machine: str | None = None

    def __repr__(self) -> str:  # never print the secret
        return f"Credential(username={self.username!r}, source={self.source!r})"

    def for_machine(self, provider_id: str) -> Credential:
        """The same account, as the agent of one of its provider machines."""
        return replace(self, machine=provider_id)

    @property
    def user(self) -> str:
        if self.machine is None:
            return self.username
        return f"{self.username}{MACHINE_SEPARATOR}{self.machine}"

    @property
    def inbox_prefix(self) -> str | None:
        """The only subjects this connection may subscribe to; None: nats-py's default."""
        if self.source == "platform":
            return None
        if self.source == "signup":
            return inbox_prefix(SIGNUP_USER, self.secret)
        return inbox_prefix(self.username)

    @property
    def reply_prefix(self) -> str | None:
        """Where the platform's answers to this connection arrive; None: to the reply
        subject of each request (the platform's own connections)."""
        if self.source == "platform":
            return None
        if self.source == "signup":
            return reply_prefix(SIGNUP_USER, self.secret)
        return reply_prefix(self.username)

    def connect_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"user": self.user, "password": self.secret}
        if self.inbox_prefix is not None:
            options["inbox_prefix"] = self.inbox_prefix
        return options


def platform_credential(password: str) -> Credential:
    """The platform's own service user (from the installation's secrets)."""
    return Credential(username=PLATFORM_USER, secret=password, source="platform")


def system_credential(password: str) -> Credential:
    """The platform's user in the system account (from the installation's secrets)."""
    return Credential(username=SYSTEM_USER, secret=password, source="platform")


def signup_credential(nonce: str) -> Credential:
    return Credential(username=SIGNUP_USER, secret=nonce, source="signup")


def config_dir() -> Path:
    """$XDG_CONFIG_HOME/dante, else ~/.config/dante."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dante"


def normalize_url(url: str) -> str:
    """The key a URL's credentials are kept under: trimmed, without trailing slashes."""
    return ",".join(part.strip().rstrip("/") for part in url.split(",") if part.strip())


class _Stored(msgspec.Struct, kw_only=True):
    username: str
    token: str
    role: str | None = None
    saved_at: datetime | None = None


class _File(msgspec.Struct, kw_only=True):
    version: int = 1
    servers: dict[str, _Stored] = msgspec.field(default_factory=dict)


def _read(name: str) -> _File:
    path = config_dir() / name
    if not path.exists():
        return _File()
    try:
        return msgspec.json.decode(path.read_bytes(), type=_File)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CredentialError(f"{path} is damaged ({exc}); remove it and log in again") from None


def _write(name: str, content: _File) -> Path:
    folder = config_dir()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    path = folder / name
    write_private(path, msgspec.json.format(msgspec.json.encode(content)) + b"\n")
    return path


def from_environment() -> Credential | None:
    username = os.environ.get(USERNAME_VAR)
    password = os.environ.get(PASSWORD_VAR)
    if not username and not password:
        return None
    if not username or not password:
        missing = PASSWORD_VAR if username else USERNAME_VAR
        raise CredentialError(f"{missing} is not set; set both {USERNAME_VAR} and {PASSWORD_VAR}")
    return Credential(username=username, secret=password, source="environment")


def stored_login(url: str) -> Credential | None:
    stored = _read(LOGINS_FILE).servers.get(normalize_url(url))
    if stored is None:
        return None
    return Credential(
        username=stored.username, secret=stored.token, source="login", role=stored.role
    )


def user_credential(url: str) -> Credential | None:
    """DANTE_USERNAME and DANTE_PASSWORD, else the stored login for `url`, else None."""
    return from_environment() or stored_login(url)


def save_login(url: str, username: str, token: str, role: str | None) -> Path:
    content = _read(LOGINS_FILE)
    content.servers[normalize_url(url)] = _Stored(
        username=username, token=token, role=role, saved_at=datetime.now(UTC)
    )
    return _write(LOGINS_FILE, content)


def remove_login(url: str) -> Credential | None:
    """Forget the stored login for `url`; what was stored, if anything."""
    found = stored_login(url)
    if found is not None:
        content = _read(LOGINS_FILE)
        content.servers.pop(normalize_url(url), None)
        _write(LOGINS_FILE, content)
    return found


def operator_credential(url: str) -> Credential | None:
    stored = _read(OPERATOR_FILE).servers.get(normalize_url(url))
    if stored is None:
        return None
    return Credential(
        username=stored.username, secret=stored.token, source="operator", role="operator"
    )


def save_operator(url: str, token: str) -> Path:
    content = _read(OPERATOR_FILE)
    content.servers[normalize_url(url)] = _Stored(
        username=OPERATOR, token=token, role="operator", saved_at=datetime.now(UTC)
    )
    return _write(OPERATOR_FILE, content)


def write_private(path: Path, data: bytes) -> None:
    """Write `path` readable by its owner only, atomically (never briefly wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.chmod(0o600)  # whatever the umask
        temporary.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
