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
