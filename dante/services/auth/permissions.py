"""What each kind of connection may publish and subscribe to: the table nats-server enforces.

Every connection but the platform's own lands in the `PUBLIC` account, which holds no data:
it reaches the platform only through the services the `DANTE` account exports (see
nats.conf). Within those, the permissions below narrow each connection to its own identity.
Anything not allowed is denied. JetStream's replies come back through the service imports,
so a client never names a subject in the `DANTE` account as a reply, and cannot make the
platform or JetStream write into the log for it. The platform's own answers never go to a
reply subject a client named: they go to `dante.reply.<identity>.<token>`, which only that
identity may subscribe to (see dante/services/replies.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from dante.events.subjects import (
    CLIENT_API_PREFIX,
    DISPATCH_STREAM,
    STREAM,
    agent_consumer_name,
    heartbeat_subject,
)
from dante.schemas.identity import (
    MACHINE_SEPARATOR,
    OPERATOR,
    account_subject,
    inbox_prefix,
    reply_prefix,
    signup_subject,
)
from dante.schemas.values import ACCOUNT_PATTERN, ID_PATTERN, RESERVED_ACCOUNTS

#: The account every dynamic user is placed in (see nats.conf).
PUBLIC_ACCOUNT: Final = "PUBLIC"
_ACCOUNT = re.compile(ACCOUNT_PATTERN)
_MACHINE = re.compile(ID_PATTERN)
_NONCE = re.compile(r"^[A-Za-z0-9]{22,64}$")

Role = Literal["renter", "provider", "operator", "signup"]
#: How the connection proved who it is; only a password may mint login tokens.
Proof = Literal["password", "token", "nonce"]


def valid_account_name(name: str) -> bool:
    """An account anyone may open: the pattern, and not a name the platform keeps."""
    return bool(_ACCOUNT.match(name)) and name not in RESERVED_ACCOUNTS


def valid_machine(machine: str) -> bool:
    return bool(_MACHINE.match(machine))


def valid_nonce(nonce: str) -> bool:
    return bool(_NONCE.match(nonce))


@dataclass(frozen=True, slots=True)
class Scope:
    """Who a connection is: an account and its role, an agent's machine, how it logged in."""

    role: Role
    account: str
    proof: Proof
    #: An agent's provider id; only for providers.
    machine: str | None = None
    #: A sign-up connection's inbox nonce.
    nonce: str | None = None

    @property
    def user_name(self) -> str:
        """The name the server shows for the connection (monitoring, logs)."""
        if self.machine is not None:
            return f"{self.account}{MACHINE_SEPARATOR}{self.machine}"
        return self.account


@dataclass(frozen=True, slots=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def claims(self) -> dict[str, dict[str, list[str]]]:
        """The `pub`/`sub` part of a user JWT."""
        return {"pub": {"allow": list(self.publish)}, "sub": {"allow": list(self.subscribe)}}


def permissions_for(scope: Scope) -> Permissions:
    """The subjects `scope` may publish and subscribe to; nothing else is allowed."""
    name = scope.account
    # JetStream's answers (pulls, heartbeats' acks) come to the inbox; the platform's own
    # answers to the reply prefix (see dante/services/replies.py).
    inbox = (f"{inbox_prefix(name, scope.nonce)}.>", f"{reply_prefix(name, scope.nonce)}.*")
    if scope.role == "signup":
        assert scope.nonce is not None
        return Permissions(publish=(signup_subject(scope.nonce),), subscribe=inbox)
    if scope.role == "operator":
        api = CLIENT_API_PREFIX
        return Permissions(
            publish=(
                f"dante.cmd.operator.{OPERATOR}.>",
                "$SRV.>",
                f"{api}.STREAM.INFO.{STREAM}",
                f"{api}.DIRECT.GET.{STREAM}",
                f"{api}.DIRECT.GET.{STREAM}.>",
            ),
            subscribe=inbox,
        )
    account_ops = [account_subject(name, "logout")]
    if scope.proof == "password":
        # A token cannot mint another: revoking a stolen token then ends its use for good.
        account_ops.append(account_subject(name, "token"))
    if scope.role == "renter":
        return Permissions(publish=(f"dante.cmd.renter.{name}.>", *account_ops), subscribe=inbox)
    publish = [
        f"dante.cmd.provider.{name}.>",
        # A provider's own wallet is read with the renter-side queries, and so is the
        # statement of a job its machines ran (the platform checks which side asks).
        f"dante.cmd.renter.{name}.balance",
        f"dante.cmd.renter.{name}.history",
        f"dante.cmd.renter.{name}.statement",
        # The chain's status and a payout address's balance.
        f"dante.cmd.renter.{name}.chain",
        *account_ops,
    ]
    if scope.machine is not None:
        consumer = agent_consumer_name(name, scope.machine)
        publish += [
            heartbeat_subject(name, scope.machine),
            f"{CLIENT_API_PREFIX}.CONSUMER.MSG.NEXT.{DISPATCH_STREAM}.{consumer}",
            f"$JS.ACK.{DISPATCH_STREAM}.{consumer}.>",
        ]
    return Permissions(publish=tuple(publish), subscribe=inbox)
