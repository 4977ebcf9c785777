"""Who is who on the wire: the platform's own user names, where replies arrive, the
subjects of account operations. The server's permissions and the clients share them."""

from __future__ import annotations

from typing import Final

#: The platform's static service user in the `DANTE` account; the callout never sees it.
PLATFORM_USER: Final = "dante-platform"
#: The platform's static user in the system account (closing revoked logins' connections).
SYSTEM_USER: Final = "dante-system"
#: The user name of the operator, whose credential `dante up` writes.
OPERATOR: Final = "operator"
#: The user name a client without an account signs up as; its password is a random nonce
#: that names its private reply inbox.
SIGNUP_USER: Final = "signup"
#: Account operations: `dante.acct.signup.<nonce>`, `dante.acct.<name>.token`, `...logout`.
ACCOUNT_PREFIX: Final = "dante.acct"
SIGNUP_SUBJECT: Final = f"{ACCOUNT_PREFIX}.signup"
#: Where the platform's answers to commands and account operations arrive:
#: `dante.reply.<owner>.<token>`, `<owner>` the identity the request's subject names (which
#: nats-server let only that identity publish to) and `<token>` the `REPLY_HEADER` the
#: request carried. A reply subject the client names is never answered: across the service
#: import the platform sees only the server's `_R_…` stand-in for it, so it could not tell
#: `_INBOX_alice.x` sent by mallory from mallory's own inbox.
REPLY_PREFIX: Final = "dante.reply"
REPLY_HEADER: Final = "Dante-Reply"
#: Separates the account from the machine in an agent's user name: `bob/prv-1`.
MACHINE_SEPARATOR: Final = "/"


def inbox_prefix(account: str, nonce: str | None = None) -> str:
    """Where a connection's replies arrive: `_INBOX_<account>`, or a sign-up's own inbox."""
    if nonce is not None:
        return f"_INBOX_{SIGNUP_USER}.{nonce}"
    return f"_INBOX_{account}"


def account_subject(account: str, verb: str) -> str:
    return f"{ACCOUNT_PREFIX}.{account}.{verb}"


def signup_subject(nonce: str) -> str:
    """Where a sign-up connection asks to open an account: its nonce names it."""
    return f"{SIGNUP_SUBJECT}.{nonce}"


def reply_prefix(account: str, nonce: str | None = None) -> str:
    """Where the platform's answers to a connection arrive (`<prefix>.<token>`)."""
    if nonce is not None:
        return f"{REPLY_PREFIX}.{SIGNUP_USER}.{nonce}"
    return f"{REPLY_PREFIX}.{account}"


def reply_owner(subject: str) -> str | None:
    """The part of `REPLY_PREFIX` a request's subject names, from the identity in it:
    `dante.cmd.<role>.<identity>.<verb>` → `<identity>`, `dante.acct.<name>.<verb>` →
    `<name>`, `dante.acct.signup.<nonce>` → `signup.<nonce>`; None for anything else."""
    parts = subject.split(".")
    if len(parts) == 5 and parts[:2] == ["dante", "cmd"]:
        return parts[3] or None
    if len(parts) == 4 and f"{parts[0]}.{parts[1]}" == ACCOUNT_PREFIX and all(parts[2:]):
        if parts[2] == SIGNUP_USER:
            return f"{SIGNUP_USER}.{parts[3]}"
        return parts[2]
    return None
