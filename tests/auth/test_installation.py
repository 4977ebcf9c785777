from __future__ import annotations

import re
import stat
from pathlib import Path

from dante.handlers.auth.installation import ENV_FILE, SECRETS_FILE, InstallationSecrets


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_are_made_once_and_readable_by_their_owner_only(tmp_path: Path) -> None:
    first = InstallationSecrets.load_or_create(tmp_path)
    again = InstallationSecrets.load_or_create(tmp_path)
    assert first == again
    assert mode(tmp_path / SECRETS_FILE) == 0o600
    assert mode(tmp_path / ENV_FILE) == 0o600
    env = (tmp_path / ENV_FILE).read_text()
    assert f"DANTE_AUTH_ISSUER={first.signer.public_key}\n" in env
    assert f"DANTE_PLATFORM_PASSWORD={first.platform_password}\n" in env
    assert first.issuer_seed not in env and first.operator_token not in env


def test_the_platform_password_survives_nats_servers_variable_parsing() -> None:
    # nats-server reads `$VAR` values like config text: "12k" would become 12000.
    for _ in range(50):
        password = InstallationSecrets.generate().platform_password
        assert re.fullmatch(r"p[0-9a-f]{64}", password)
