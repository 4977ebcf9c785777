"""A real nats-server with the shipped nats.conf (auth callout on), and the platform with its
identity service, for tests of who may do what. Other tests keep their bare servers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from nats.aio.client import Client as NATS

from dante.client.accounts import new_nonce, sign_up
from dante.client.connect import connect
from dante.client.credentials import (
    PASSWORD_VAR,
    USERNAME_VAR,
    Credential,
    platform_credential,
    signup_credential,
    system_credential,
)
from dante.domain.settings import Settings
from dante.events.natsd import NatsServer, default_config
from dante.platform import Platform, PlatformOptions
from dante.projections.audit.run import audit
from dante.services.auth.installation import InstallationSecrets
from dante.services.auth.service import Identity
from dante.services.auth.sessions import Sessions
from tests.handlers.conftest import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings() -> Settings:
    """The platform's rules in `secured`; a test module overrides it to tune them."""
    return Settings()


@pytest.fixture
def installation() -> InstallationSecrets:
    return InstallationSecrets.generate()


@pytest.fixture
def auth_server(tmp_path: Path, installation: InstallationSecrets) -> Iterator[NatsServer]:
    """nats-server with the shipped configuration: logins decided by the auth callout."""
    server = NatsServer(
        store_dir=tmp_path / "nats",
        config=default_config(),
        monitor_port=-1,
        env=installation.server_env(),
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config folder of our own, and no credentials from the environment."""
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.delenv(USERNAME_VAR, raising=False)
    monkeypatch.delenv(PASSWORD_VAR, raising=False)
    return home / "dante"


@dataclass
class Secured:
    """The platform behind an authenticating server, and ways in for tests."""

    url: str
    platform: Platform
    identity: Identity
    installation: InstallationSecrets
    connections: list[NATS] = field(default_factory=list)

    async def sign_up(
        self, name: str, password: str, role: Literal["renter", "provider"] = "renter"
    ) -> None:
        """Open an account the way a client does: through a sign-up connection."""
        nc = await connect(self.url, name="signup", credential=signup_credential(new_nonce()))
        try:
            await sign_up(nc, name, password, role)
        finally:
            await nc.close()

    async def login(self, name: str, secret: str, machine: str | None = None) -> NATS:
        credential = Credential(username=name, secret=secret)
        if machine is not None:
            credential = credential.for_machine(machine)
        nc = await connect(self.url, name=f"test-{name}", credential=credential)
        self.connections.append(nc)
        return nc

    async def operator(self) -> NATS:
        credential = Credential(
            username="operator", secret=self.installation.operator_token, source="operator"
        )
        nc = await connect(self.url, name="test-operator", credential=credential)
        self.connections.append(nc)
        return nc

    async def audit_clean(self) -> None:
        """The whole log passes every invariant of the audit (after an attack, say)."""
        await self.platform.settle()
        report = await audit(self.platform.store)
        assert report.ok, [v.message for v in report.violations]
        assert report.position == await self.platform.store.last_seq()

    async def snapshot(self) -> tuple[int, dict[str, tuple[int, int]]]:
        """The log's last sequence and every wallet's (available, held), once settled."""
        await self.platform.settle()
        wallets = self.platform.tail.world.wallets
        balances = {name: (w.available, w.held) for name, w in wallets.items()}
        return await self.platform.store.last_seq(), balances


@pytest.fixture
async def secured(
    auth_server: NatsServer,
    installation: InstallationSecrets,
    tmp_path: Path,
    clock: Clock,
    settings: Settings,
) -> AsyncIterator[Secured]:
    nc = await connect(
        auth_server.url,
        name="dante-platform",
        forever=True,
        credential=platform_credential(installation.platform_password),
    )
    system = await connect(
        auth_server.url,
        name="dante-system",
        forever=True,
        credential=system_credential(installation.system_password),
    )
    options = PlatformOptions(
        data_dir=tmp_path, settings=settings, clock=clock, timer_interval=3600
    )
    platform = Platform(nc, options)
    identity = Identity(
        nc,
        platform.store,
        installation.signer,
        operator_token=installation.operator_token,
        sessions=Sessions(system),
    )
    task = asyncio.create_task(platform.run(extra=[identity.run]))
    await asyncio.wait_for(platform.ready.wait(), 20)
    await asyncio.wait_for(identity.ready.wait(), 20)
    found = Secured(
        url=auth_server.url, platform=platform, identity=identity, installation=installation
    )
    try:
        yield found
    finally:
        for client in found.connections:
            with contextlib.suppress(Exception):
                await client.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await nc.close()
        await system.close()
