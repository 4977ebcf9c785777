"""`dante up` checks the operator's limit settings before it starts anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.platform_proc import dante, environment


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DANTE_LOGIN_PENDING_PER_ADDRESS", "lots"),
        ("DANTE_LOGIN_FAILURES_PER_MINUTE", "0"),
        ("DANTE_SCRYPT_LOG2_N", "40"),
        ("DANTE_CLIENT_MAX_PAYLOAD", "99999999"),
    ],
)
def test_an_unusable_setting_stops_up_with_its_name(
    tmp_path: Path, variable: str, value: str
) -> None:
    data = tmp_path / "data"
    ran = dante(
        "up",
        "--data-dir",
        str(data),
        "--port",
        "-1",
        env=environment({variable: value}),
        clean=True,
    )
    assert ran.returncode == 2, ran.stderr
    assert f"${variable}" in ran.stderr and value in ran.stderr
    assert not data.exists()  # nothing started, nothing written


def test_dante_up_hands_its_per_account_limits_to_its_child() -> None:
    # The child `dante serve handlers views` runs the input sweeper: it must get the limits
    # `dante up` was given, as options it parses into the same settings.
    from dante.cli.app import app
    from dante.cli.limits import Limits

    given = Limits(input_ttl=3600, rate_limit=5.0, max_machines=8)
    assert Limits().argv() == []
    argv = given.argv()
    assert argv == ["--rate-limit", "5.0", "--max-machines", "8", "--input-ttl", "3600"]
    _, bound, _ = app.parse_args(["serve", "handlers", "views", *argv])
    assert bound.arguments["limits"].settings() == given.settings()
