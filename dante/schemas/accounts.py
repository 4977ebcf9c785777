"""Account operations: signing up, logging in (a login token), logging out.

They travel on `dante.acct.…`, not as commands, because they concern the connection's
credentials rather than the marketplace: `dante.acct.signup.<nonce>` (from a sign-up
connection, which may send nothing else), `dante.acct.<name>.token` (from a connection that
logged in with the account's password) and `dante.acct.<name>.logout`. Replies use the same
`Reply` envelope as commands, on the caller's reply prefix (dante/services/replies.py).
Passwords travel only in `SignUp`, and are never stored or logged.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from dante.schemas.values import Text

Secret = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


#: Only bounds the message: the platform checks the name and the password by its rules
#: (dante/services/auth/accounts.py), so a bad one is told what those rules are.
_Field = Annotated[str, msgspec.Meta(max_length=4096)]


class SignUp(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    username: _Field
    password: _Field
    role: Literal["renter", "provider"] = "renter"


class AccountResult(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    username: str
    role: str


class IssueToken(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """Ask for a login token; `label` says where it is used (a host name), for the owner."""

    label: Text = ""


class TokenResult(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    username: str
    role: str
    token: str


class RevokeToken(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    token: Secret
