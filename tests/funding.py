"""Money for test scenarios, paid for honestly: a fresh keypair gets test dGPU from the
local chain's faucet and deposits it through the chain, as a renter would."""

from __future__ import annotations

from nats.aio.client import Client as NATS
from solders.keypair import Keypair

from dante.client.commands import Client, new_command_id
from dante.client.payments import faucet, pay_deposit
from dante.schemas.results import WalletResult


async def fund(client: Client, amount: int, *, keypair: Keypair | None = None) -> WalletResult:
    """Faucet `amount` to a keypair (a new one unless given) and deposit it for `client`."""
    keypair = keypair or Keypair()
    await faucet(client, str(keypair.pubkey()), amount)
    _, result = await pay_deposit(client, keypair, amount, command_id=new_command_id())
    return result


async def fund_renter(nc: NATS, renter: str, amount: int) -> WalletResult:
    return await fund(Client(nc, "renter", renter, timeout=10), amount)
