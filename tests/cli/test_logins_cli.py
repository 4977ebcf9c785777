"""The renter's commands on a platform that enforces logins (`dante up` as a real process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.cli import Ran, run_dante
from tests.cli.platform_proc import UpProcess


@pytest.fixture
def up(tmp_path: Path) -> Iterator[UpProcess]:
    config = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "LOG_LEVEL": "warning"}
    platform = UpProcess(tmp_path / "data", None, env=config).start()
    try:
        yield platform
    finally:
        platform.stop()


def as_(up: UpProcess, *args: str, user: str | None, password: str | None = None) -> Ran:
    config = up.env["XDG_CONFIG_HOME"]
    env = {"XDG_CONFIG_HOME": config, "SOLANA_KEYPAIR": f"{config}/solana/{user}.json"}
    if password is not None:
        env["DANTE_PASSWORD"] = password
    return run_dante(*args, url=up.url, user=user, env=env)


def test_logged_in_renters_act_as_themselves_only(up: UpProcess) -> None:
    ran = as_(up, "account", "create", "--no-login", user="alice", password="alice-secret")
    assert ran.code == 0, ran

    ran = as_(up, "chain", "faucet", "5", user="alice", password="alice-secret")
    assert ran.code == 0, ran
    ran = as_(up, "wallet", "deposit", "5", "--json", user="alice", password="alice-secret")
    assert ran.code == 0, ran
    assert ran.json()["available_udgpu"] == 5_000_000
    ran = as_(up, "market", "--json", user="alice", password="alice-secret")
    assert ran.code == 0 and ran.json()["offers"] == [], ran

    # `--user` names who logs in; with another's password the platform refuses the login.
    ran = as_(up, "balance", "--user", "mallory", user="alice", password="alice-secret")
    assert ran.code == 1, ran
    assert ran.err.startswith("error: the platform at") and "refused 'mallory'" in ran.err

    # A name without a password does not log in, and a platform with logins says what to do.
    ran = as_(up, "balance", "--json", user="alice")
    assert ran.code == 1, ran
    error = ran.json()["error"]
    assert error["code"] == "login_refused"
    assert "dante login" in error["message"]

    ran = as_(up, "wallet", "balance", "--json", user=None)
    assert ran.code == 1 and "dante login" in ran.json()["error"]["message"]
