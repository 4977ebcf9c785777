from __future__ import annotations

import json
import re
import stat
from pathlib import Path

from dante.services.auth.installation import ENV_FILE, SECRETS_FILE, InstallationSecrets


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
    assert f"DANTE_SYSTEM_PASSWORD={first.system_password}\n" in env
    assert first.system_password != first.platform_password
    assert first.issuer_seed not in env and first.operator_token not in env


def test_an_installation_from_before_the_system_user_gains_one(tmp_path: Path) -> None:
    # secrets.json as written before the system user existed.
    old = InstallationSecrets.generate()
    (tmp_path / SECRETS_FILE).write_text(
        json.dumps(
            {
                "issuer_seed": old.issuer_seed,
                "platform_password": old.platform_password,
                "operator_token": old.operator_token,
            }
        )
    )

    upgraded = InstallationSecrets.load_or_create(tmp_path)

    assert (upgraded.issuer_seed, upgraded.platform_password, upgraded.operator_token) == (
        old.issuer_seed,
        old.platform_password,
        old.operator_token,
    )
    assert re.fullmatch(r"p[0-9a-f]{64}", upgraded.system_password)
    assert InstallationSecrets.load_or_create(tmp_path) == upgraded  # kept from now on
    assert mode(tmp_path / SECRETS_FILE) == 0o600
    env = (tmp_path / ENV_FILE).read_text()
    assert f"DANTE_SYSTEM_PASSWORD={upgraded.system_password}\n" in env


def test_the_platform_password_survives_nats_servers_variable_parsing() -> None:
    # nats-server reads `$VAR` values like config text: "12k" would become 12000.
    for _ in range(50):
        password = InstallationSecrets.generate().platform_password
        assert re.fullmatch(r"p[0-9a-f]{64}", password)
