"""`dante up --demo`: a simulated provider and a funded demo renter, for trying Dante at once.

The provider is the real agent, `dante agent run --simulate … --executor script`, as a child
process logged in as the demo provider account; its log goes to `<data dir>/demo-agent.log`.
The renter gets 100 dGPU the first time (a restart does not add more).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

import anyio
from anyio.abc import Process, TaskStatus

from dante.events.private import private_dir
from dante.schemas.money import UDGPU_PER_DGPU

if TYPE_CHECKING:
    from dante.client.credentials import Credential

#: Two simulated GPUs, as `dante agent run --simulate` takes them.
DEMO_GPUS: Final = "2xNVIDIA GeForce RTX 4090:24"
DEMO_FUNDS: Final = 100 * UDGPU_PER_DGPU
#: Where the demo provider's (pretend) earnings would be paid.
DEMO_PAYOUT: Final = "DanteDemoProviderPayoutAddress1111111111"
DEMO_NAME: Final = "demo-provider"
#: How long the agent may take to give its jobs back and stop when `dante up` stops.
_STOP_S: Final = 20.0
_ONLINE_S: Final = 60.0


class DemoAgent:
    """The demo provider's agent, a child process that `dante up` starts and stops."""

    def __init__(self, url: str, data_dir: Path, account: Credential) -> None:
        self.url = url
        self.work_dir = data_dir / "demo-agent"
        self.log_path = data_dir / "demo-agent.log"
        self._account = account
        self._process: Process | None = None
        self._stopping = False

    def _argv(self) -> list[str]:
        return [
            sys.executable, "-m", "dante", "agent", "run",
            "--simulate", DEMO_GPUS, "--executor", "script",
            "--name", DEMO_NAME, "--location", "demo", "--wallet", DEMO_PAYOUT,
            "--work-dir", str(self.work_dir), "--drain-timeout", "5",
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        from dante.client.credentials import PASSWORD_VAR, USERNAME_VAR

        env = {k: v for k, v in os.environ.items() if not k.startswith("DANTE_")}
        env.update(
            {
                USERNAME_VAR: self._account.username,
                PASSWORD_VAR: self._account.secret,
                "DANTE_NATS_URL": self.url,
            }
        )
        return env

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the agent and wait for it; it is stopped when this is cancelled."""
        private_dir(self.work_dir)
        with self.log_path.open("ab") as log:
            # Its own session: Ctrl-C in the terminal reaches `dante up`, which stops it.
            self._process = await anyio.open_process(
                self._argv(),
                stdin=None,
                stdout=log,
                stderr=log,
                env=self._env(),
                cwd=self.work_dir,
                start_new_session=True,
            )
            task_status.started()
            try:
                code = await self._process.wait()
                if not self._stopping:
                    print(
                        f"the demo provider's agent stopped (exit code {code}); "
                        f"see {self.log_path}",
                        file=sys.stderr,
                        flush=True,
                    )
            finally:
                with anyio.CancelScope(shield=True):
                    await self.stop()

    async def stop(self) -> None:
        """Ask the agent to stop (it gives its running jobs back), then insist."""
        from dante.cli.lifecycle import stop_child

        self._stopping = True
        if self._process is not None:
            await stop_child(self._process, _STOP_S)


def demo_keypair_path(data_dir: Path) -> Path:
    """The demo renter's Solana keypair: it pays the demo's deposit on the local chain."""
    return data_dir / "demo-renter-keypair.json"


async def fund(url: str, renter: Credential, data_dir: Path) -> bool:
    """Pay the demo renter's 100 dGPU, once: its keypair gets them from the local chain's
    faucet and deposits them through the chain. False when it cannot log in."""
    from dante.chain.keys import load_or_create
    from dante.client.commands import Client, CommandError, new_command_id
    from dante.client.connect import ConnectFailed, connect
    from dante.client.payments import PaymentError, faucet, pay_deposit
    from dante.schemas.commands import GetBalance

    try:
        nc = await connect(url, name="dante-demo", credential=renter)
    except ConnectFailed as exc:
        print(f"demo renter {renter.username}: not funded: {exc}", file=sys.stderr, flush=True)
        return False
    try:
        client = Client(nc, "renter", renter.username)
        balance = await client.ask(GetBalance())
        if balance.deposited_udgpu == 0:
            payer = load_or_create(demo_keypair_path(data_dir))
            try:
                await faucet(client, str(payer.pubkey()), DEMO_FUNDS)
                await pay_deposit(
                    client, payer, DEMO_FUNDS, command_id=new_command_id(), reference="demo"
                )
            except (CommandError, PaymentError) as exc:
                print(f"demo renter {renter.username}: not funded: {exc}", file=sys.stderr)
                return False
    finally:
        await nc.close()
    return True


async def wait_until_offered(url: str, renter: Credential, provider: str) -> bool:
    """Wait until the demo provider's GPUs are on the market (it registered and is online)."""
    from dante.client.commands import Client
    from dante.client.connect import connect
    from dante.schemas.commands import ListOffers

    nc = await connect(url, name="dante-demo", credential=renter)
    try:
        client = Client(nc, "renter", renter.username)
        with anyio.move_on_after(_ONLINE_S):
            while True:
                offers = await client.ask(ListOffers())
                if any(offer.owner == provider for offer in offers):
                    return True
                await anyio.sleep(0.5)
    finally:
        await nc.close()
    return False


def next_steps(
    url: str, renter: Credential, *, default_password: bool, activate: Path | None = None
) -> str:
    """What to try next; `activate` is the script that puts this `dante` on the PATH, when
    a new terminal would not find it (default: this environment's, if so)."""
    password = renter.secret if default_password else "'<your DANTE_PASSWORD>'"
    if activate is None:
        activate = _activate_if_needed()
    path = [f"  source {activate}   # puts dante on your PATH"] if activate else []
    return "\n".join(
        [
            (
                f"Demo: {DEMO_NAME} offers two simulated RTX 4090 GPUs; "
                f"{renter.username} has {DEMO_FUNDS // UDGPU_PER_DGPU} dGPU to spend."
            ),
            "Try, in another terminal:",
            *path,
            (
                f"  export DANTE_NATS_URL={url} DANTE_USERNAME={renter.username} "
                f"DANTE_PASSWORD={password}"
            ),
            "  dante market          # the GPUs on offer",
            "  dante submit hello    # a first job: it prints how to follow it",
            "  dante                 # the menu: balance, jobs, logs, cancel, estimates",
        ]
    )


def _activate_if_needed() -> Path | None:
    """This virtual environment's activate script, unless `dante` on the PATH is ours."""
    ours = Path(sys.prefix) / "bin"
    activate = ours / "activate"
    found = shutil.which("dante")
    if not activate.exists() or (found and Path(found).parent.resolve() == ours.resolve()):
        return None
    try:
        return activate.relative_to(Path.cwd())
    except ValueError:
        return activate
