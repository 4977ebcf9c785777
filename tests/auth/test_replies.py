"""Where the platform answers: the caller's own reply prefix, from the identity in the subject."""

from __future__ import annotations

import pytest

from dante.schemas.identity import reply_owner
from dante.services.replies import answer_subject

TOKEN = {"Dante-Reply": "0123456789abcdef01234567"}


@pytest.mark.parametrize(
    ("subject", "reply", "headers", "answer"),
    [
        # From outside the platform's account: only to the identity's own prefix.
        ("dante.cmd.renter.mallory.balance", "_R_.abc.def", TOKEN, "dante.reply.mallory."),
        ("dante.cmd.provider.bob.register", None, TOKEN, "dante.reply.bob."),
        ("dante.cmd.operator.operator.status", "_R_.x.y", TOKEN, "dante.reply.operator."),
        ("dante.acct.alice.token", "_R_.x.y", TOKEN, "dante.reply.alice."),
        ("dante.acct.signup.n0nce0123456789abcdef012", None, TOKEN, "dante.reply.signup.n0nce"),
        # No token, or one that is no NATS token: not answered at all.
        ("dante.cmd.renter.mallory.balance", "_R_.abc.def", None, None),
        ("dante.cmd.renter.mallory.balance", "_R_.abc.def", {"Dante-Reply": "a.b.c.d.e.f"}, None),
        ("dante.cmd.renter.mallory.balance", None, {"Dante-Reply": "short"}, None),
        ("dante.cmd.renter.mallory.balance", None, {"Dante-Reply": "x" * 65}, None),
        ("dante.cmd.renter.mallory", None, TOKEN, None),
        # From the platform's own account: the reply subject its sender named.
        ("dante.cmd.renter.alice.balance", "_INBOX.abc.1", None, "_INBOX.abc.1"),
    ],
)
def test_answers_go_to_the_callers_prefix_or_nowhere(
    subject: str, reply: str | None, headers: dict[str, str] | None, answer: str | None
) -> None:
    got = answer_subject(subject, reply, headers)
    if answer is None:
        assert got is None
    else:
        assert got is not None and got.startswith(answer)
        if reply is None or reply.startswith("_R_."):
            assert got.endswith(f".{TOKEN['Dante-Reply']}")


def test_the_owner_is_the_identity_the_subject_names() -> None:
    assert reply_owner("dante.cmd.renter.alice.submit") == "alice"
    assert reply_owner("dante.acct.bob.logout") == "bob"
    assert reply_owner("dante.acct.signup.abc") == "signup.abc"
    assert reply_owner("dante.evt.wallet.alice") is None
    assert reply_owner("dante.acct.signup") is None
    assert reply_owner("dante.cmd.renter..submit") is None
