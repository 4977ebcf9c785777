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
#: Account operations: `dante.acct.signup`, `dante.acct.<name>.token`, `...logout`.
ACCOUNT_PREFIX: Final = "dante.acct"
SIGNUP_SUBJECT: Final = f"{ACCOUNT_PREFIX}.signup"
#: Separates the account from the machine in an agent's user name: `bob/prv-1`.
MACHINE_SEPARATOR: Final = "/"


def inbox_prefix(account: str, nonce: str | None = None) -> str:
    """Where a connection's replies arrive: `_INBOX_<account>`, or a sign-up's own inbox."""
    if nonce is not None:
        return f"_INBOX_{SIGNUP_USER}.{nonce}"
    return f"_INBOX_{account}"


def account_subject(account: str, verb: str) -> str:
    return f"{ACCOUNT_PREFIX}.{account}.{verb}"
