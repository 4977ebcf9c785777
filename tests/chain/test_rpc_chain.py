"""`RpcChain`, a cluster over JSON-RPC through solana-py, against the minimal endpoint that
serves the local chain (`rpc_server.py`): the same scenarios as the local chain."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from solders.keypair import Keypair

from dante.chain import ChainError, spl
from dante.chain.keys import read_keypair
from dante.chain.local import BLOCKHASH_VALIDITY, LocalChain
from dante.chain.rpc import RpcChain
from dante.chain.rpc_server import RpcServer
from dante.client.commands import Client, CommandError, new_command_id
from dante.client.payments import pay_deposit
from dante.events.records import Append
from dante.events.store import EventStore
from dante.handlers.runner import WorldTail
from dante.handlers.settlement import Settlement
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.schemas.chain import deposit_memo
from dante.services.chain import ChainQueries
from dante.services.commands import CommandService
from tests.factories import deposit, make
from tests.handlers.conftest import Clock

pytestmark = pytest.mark.anyio

DGPU = 1_000_000


class Wall:
    def __init__(self) -> None:
        self.now = 3_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def wall() -> Wall:
    return Wall()


@pytest.fixture
def local(tmp_path: Path, wall: Wall) -> LocalChain:
    return LocalChain(tmp_path / "chain", clock=wall)


@pytest.fixture
async def rpc(local: LocalChain, tmp_path: Path) -> AsyncIterator[RpcChain]:
    server = RpcServer(local)
    await server.start()
    treasury = read_keypair(tmp_path / "chain" / "treasury.json")
    chain = RpcChain(server.url, mint=local.mint, treasury=treasury)
    try:
        yield chain
    finally:
        await chain.close()
        await server.stop()


async def test_reads_what_the_chain_holds(local: LocalChain, rpc: RpcChain) -> None:
    assert (rpc.mint, rpc.treasury, rpc.treasury_account) == (
        local.mint,
        local.treasury,
        local.treasury_account,
    )
    assert rpc.cluster.startswith("http://127.0.0.1:") and rpc.local is False
    payer = Keypair()
    assert await rpc.token_balance(str(payer.pubkey())) == 0  # no token account yet
    await local.faucet(str(payer.pubkey()), 5 * DGPU)
    assert await rpc.token_balance(str(payer.pubkey())) == 5 * DGPU
    assert await rpc.sol_balance(str(payer.pubkey())) == await local.sol_balance(
        str(payer.pubkey())
    )
    assert await rpc.block_height() == await local.block_height()
    assert await rpc.slot() == await local.slot()
    blockhash, last_valid = await rpc.latest_blockhash()
    assert (blockhash, last_valid) == await local.latest_blockhash()

    tx = spl.deposit_transaction(
        payer,
        mint=rpc.mint,
        treasury=rpc.treasury,
        amount=2 * DGPU,
        note=deposit_memo("alice"),
        blockhash=blockhash,
    )
    signature = await rpc.send(bytes(tx))
    status = await rpc.signature_status(signature)
    assert status is not None and status.confirmed and status.error is None
    transfer = await rpc.transfer(signature)
    assert transfer == await local.transfer(signature)
    assert transfer is not None and transfer.destination_owner == rpc.treasury
    assert await rpc.transfer(str(Keypair().sign_message(b"none"))) is None
    assert await rpc.signature_status(str(Keypair().sign_message(b"none"))) is None
    # The cluster refuses what the runtime refuses, with its message.
    again = spl.deposit_transaction(
        payer, mint=rpc.mint, treasury=rpc.treasury, amount=9 * DGPU, note="x", blockhash=blockhash
    )
    with pytest.raises(ChainError, match="insufficient funds") as refused:
        await rpc.send(bytes(again))
    assert not refused.value.unreachable


async def test_payouts_expire_and_are_signed_anew(
    local: LocalChain, rpc: RpcChain, wall: Wall
) -> None:
    await local.faucet(local.treasury, 10 * DGPU)
    payee = str(Keypair().pubkey())
    payout = await rpc.sign_payout(payee, 3 * DGPU, memo="dante:payout:wd-1")
    wall.now += 0.4 * (BLOCKHASH_VALIDITY + 1)
    assert await rpc.block_height() > payout.last_valid_block_height
    with pytest.raises(ChainError, match="Blockhash not found"):
        await rpc.send(payout.transaction)
    assert await rpc.signature_status(payout.signature) is None
    fresh = await rpc.sign_payout(payee, 3 * DGPU, memo="dante:payout:wd-1")
    assert await rpc.send(fresh.transaction) == fresh.signature
    assert await rpc.token_balance(payee) == 3 * DGPU
    transfer = await rpc.transfer(fresh.signature)
    assert transfer is not None and transfer.destination_owner == payee


async def test_an_unreachable_endpoint_is_said_so(local: LocalChain, tmp_path: Path) -> None:
    treasury = read_keypair(tmp_path / "chain" / "treasury.json")
    gone = RpcChain("http://127.0.0.1:9", mint=local.mint, treasury=treasury)
    try:
        with pytest.raises(ChainError) as caught:
            await gone.block_height()
        assert caught.value.unreachable
    finally:
        await gone.close()


async def test_deposits_and_payouts_through_the_rpc_chain(
    nc: NATS, store: EventStore, local: LocalChain, rpc: RpcChain, clock: Clock
) -> None:
    service = CommandService(nc, store, chain=rpc, extensions=[ChainQueries(rpc)])
    await service.start()
    try:
        alice = Client(nc, "renter", "alice", timeout=10)
        with pytest.raises(CommandError, match="local chain only"):
            await alice.ask(cmd.Faucet(command_id=new_command_id(), address=rpc.treasury, amount=1))
        payer = Keypair()
        await local.faucet(str(payer.pubkey()), 4 * DGPU)  # bought elsewhere
        signature, result = await pay_deposit(alice, payer, 4 * DGPU, command_id=new_command_id())
        assert result.available_udgpu == 4 * DGPU
        with pytest.raises(CommandError, match="already credited"):
            await alice.ask(
                cmd.Deposit(command_id=new_command_id(), amount=4 * DGPU, signature=signature)
            )
    finally:
        await service.stop()

    payee = str(Keypair().pubkey())
    await store.append(Append(event=deposit("bob", 3, event_id="earned")))
    request = make(
        ev.WithdrawalRequested,
        wallet_id="bob",
        withdrawal_id="wd-1",
        amount=3 * DGPU,
        payout_address=payee,
        event_id="wd-1",
    )
    await store.append(Append(event=request))
    tail = WorldTail(store)
    await tail.catch_up()
    local.drop_next()  # the cluster loses the first send
    settlement = Settlement(rpc, store, lambda: tail.world, clock=clock)
    assert await settlement.step() == 1
    assert await settlement.step() == 0
    assert await rpc.token_balance(payee) == 3 * DGPU
    assert await rpc.token_balance(rpc.treasury) == DGPU
