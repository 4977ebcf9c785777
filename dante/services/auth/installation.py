"""The secrets of one installation, generated once into its data directory.

`secrets.json` (mode 0600) holds the callout's issuer seed, the platform service user's
password, the system user's password, the password a cluster's nodes route to each other
with, and the operator's login token; `nats.env` (0600) holds what nats.conf reads from the
environment (the issuer's public key, the three passwords and the limits of clients'
connections, `DANTE_CLIENT_…`), for running the server by hand or on a cluster
(`dante cluster init` writes both, and node configurations that include nats.env); it is
rewritten at every start. `dante up` hands the same values to its nats-server child through
its environment. Whoever can read these files controls the platform.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from dante.client.credentials import write_private
from dante.services.auth.jwt import Signer, new_account_seed
from dante.services.auth.limits import ClientLimits
from dante.services.auth.passwords import new_token

SECRETS_FILE: Final = "secrets.json"
ENV_FILE: Final = "nats.env"
ISSUER_VAR: Final = "DANTE_AUTH_ISSUER"
PLATFORM_PASSWORD_VAR: Final = "DANTE_PLATFORM_PASSWORD"  # noqa: S105 (a name, not a secret)
SYSTEM_PASSWORD_VAR: Final = "DANTE_SYSTEM_PASSWORD"  # noqa: S105 (a name, not a secret)
ROUTE_PASSWORD_VAR: Final = "DANTE_ROUTE_PASSWORD"  # noqa: S105 (a name, not a secret)


class _Stored(msgspec.Struct, kw_only=True):
    issuer_seed: str
    platform_password: str
    operator_token: str
    #: Empty in installations made before the system user existed: generated at next start.
    system_password: str = ""
    #: Empty in installations made before clusters had one: generated at next start.
    route_password: str = ""


@dataclass(frozen=True, slots=True)
class InstallationSecrets:
    issuer_seed: str
    platform_password: str
    operator_token: str
    system_password: str
    #: How a cluster's nodes authenticate their routes (unused by a single server).
    route_password: str = ""

    @property
    def signer(self) -> Signer:
        return Signer(self.issuer_seed)

    def server_env(self, limits: ClientLimits | None = None) -> dict[str, str]:
        """The variables nats.conf references: these secrets, and the limits of clients'
        connections (`limits`, else the operator's `DANTE_CLIENT_…` settings)."""
        return {
            ISSUER_VAR: self.signer.public_key,
            PLATFORM_PASSWORD_VAR: self.platform_password,
            SYSTEM_PASSWORD_VAR: self.system_password,
            ROUTE_PASSWORD_VAR: self.route_password,
            **(limits or ClientLimits.from_env()).server_env(),
        }

    @classmethod
    def generate(cls) -> InstallationSecrets:
        return cls(
            issuer_seed=new_account_seed(),
            platform_password=_server_password(),
            operator_token=new_token(),
            system_password=_server_password(),
            route_password=_server_password(),
        )

    @classmethod
    def load_or_create(cls, data_dir: Path) -> InstallationSecrets:
        """The installation's secrets, generated and written (0600) on first use."""
        path = data_dir / SECRETS_FILE
        stored = msgspec.json.decode(path.read_bytes(), type=_Stored) if path.exists() else None
        if stored is not None and stored.system_password and stored.route_password:
            found = cls(
                issuer_seed=stored.issuer_seed,
                platform_password=stored.platform_password,
                operator_token=stored.operator_token,
                system_password=stored.system_password,
                route_password=stored.route_password,
            )
        else:
            fresh = cls.generate()
            # An older installation keeps its secrets and gains those it lacked.
            found = (
                fresh
                if stored is None
                else cls(
                    issuer_seed=stored.issuer_seed,
                    platform_password=stored.platform_password,
                    operator_token=stored.operator_token,
                    system_password=stored.system_password or fresh.system_password,
                    route_password=stored.route_password or fresh.route_password,
                )
            )
            found.write(data_dir)
            return found
        found.write_env(data_dir)
        return found

    def write(self, data_dir: Path) -> None:
        """Write secrets.json and nats.env into `data_dir`, for its owner only."""
        stored = _Stored(
            issuer_seed=self.issuer_seed,
            platform_password=self.platform_password,
            operator_token=self.operator_token,
            system_password=self.system_password,
            route_password=self.route_password,
        )
        write_private(
            data_dir / SECRETS_FILE, msgspec.json.format(msgspec.json.encode(stored)) + b"\n"
        )
        self.write_env(data_dir)

    def write_env(self, data_dir: Path) -> None:
        """Write nats.env (0600): what nats.conf reads, as `KEY=value` lines, which both a
        shell (`set -a; . nats.env`) and nats-server (`include "nats.env"`) read."""
        env = "".join(f"{key}={value}\n" for key, value in self.server_env().items())
        write_private(data_dir / ENV_FILE, env.encode())


def _server_password() -> str:
    # nats-server parses a variable's value like config text: a leading digit or '-' would
    # make it a number (or an error), so a letter first, then hex only.
    return "p" + secrets.token_hex(32)
