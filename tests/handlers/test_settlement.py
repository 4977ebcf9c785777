"""Withdrawals are payouts on chain, made exactly once whatever crashes or the chain does."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest
from solders.keypair import Keypair

from dante.chain import ChainError
from dante.chain.local import BLOCKHASH_VALIDITY, LocalChain
from dante.domain.settings import Settings
from dante.events.records import Append
from dante.events.store import EventStore
from dante.handlers.runner import WorldTail
from dante.handlers.settlement import Settlement
from dante.schemas import events as ev
from tests.factories import NOW, deposit, make
from tests.handlers.conftest import Clock

pytestmark = pytest.mark.anyio

DGPU = 1_000_000


class Wall:
    def __init__(self) -> None:
        self.now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


class Crash(Exception):
    """The settlement died here."""


class Offline(LocalChain):
    """The local chain, unreachable: every call fails as a lost connection would."""

    def __getattribute__(self, name: str) -> object:
        if name in {"block_height", "signature_status", "sign_payout", "send", "slot"}:

            async def down(*_: object, **__: object) -> None:
                raise ChainError("connection refused", unreachable=True)

            return down
        return super().__getattribute__(name)


async def request(store: EventStore, tail: WorldTail, address: str, amount: int) -> str:
    """bob has `amount` and asks for it to be paid to `address`."""
    await store.append(Append(event=deposit("bob", amount // DGPU, event_id=f"d-{address}")))
    wid = f"wd-{len(tail.world.open_payouts) + 1}"
    request = make(
        ev.WithdrawalRequested,
        wallet_id="bob",
        withdrawal_id=wid,
        amount=amount,
        payout_address=address,
        event_id=f"r-{wid}",
    )
    await store.append(Append(event=request))
    await tail.catch_up()
    return wid


def settlement(
    chain: LocalChain,
    store: EventStore,
    tail: WorldTail,
    clock: Clock,
    fault: Callable[[str], None] | None = None,
    **settings: int,
) -> Settlement:
    return Settlement(
        chain,
        store,
        lambda: tail.world,
        settings=Settings(**settings),
        clock=clock,
        **({"fault": fault} if fault else {}),
    )


async def paid_events(store: EventStore) -> list[ev.Event]:
    return [
        r.event
        async for r in store.read()
        if isinstance(r.event, ev.PayoutSigned | ev.FundsWithdrawn | ev.WithdrawalFailed)
    ]


@pytest.fixture
def wall() -> Wall:
    return Wall()


@pytest.fixture
def treasury(tmp_path: Path, wall: Wall) -> LocalChain:
    return LocalChain(tmp_path / "settled-chain", clock=wall)


async def test_a_withdrawal_is_paid_once_and_recorded_with_its_signature(
    store: EventStore, treasury: LocalChain, clock: Clock
) -> None:
    await treasury.faucet(treasury.treasury, 50 * DGPU)
    tail = WorldTail(store)
    payee = str(Keypair().pubkey())
    wid = await request(store, tail, payee, 20 * DGPU)
    settle = settlement(treasury, store, tail, clock)
    assert await settle.step() == 0
    signed, paid = await paid_events(store)
    assert isinstance(signed, ev.PayoutSigned) and signed.attempt == 1
    assert isinstance(paid, ev.FundsWithdrawn) and paid.signature == signed.signature
    assert paid.withdrawal_id == wid and paid.amount == 20 * DGPU
    assert await treasury.token_balance(payee) == 20 * DGPU
    assert await treasury.token_balance(treasury.treasury) == 30 * DGPU
    transfer = await treasury.transfer(signed.signature)
    assert transfer is not None and transfer.amount == 20 * DGPU
    # Nothing more happens however often it runs.
    assert await settle.step() == 0
    assert await treasury.token_balance(payee) == 20 * DGPU
    assert len(await paid_events(store)) == 2
    wallet = tail.world.wallet("bob")
    assert (wallet.pending, wallet.withdrawn, wallet.available) == (0, 20 * DGPU, 0)


@pytest.mark.parametrize("point", ["signed", "recorded", "sent", "paid"])
async def test_a_crash_at_any_point_pays_exactly_once(
    store: EventStore, treasury: LocalChain, clock: Clock, point: str
) -> None:
    await treasury.faucet(treasury.treasury, 50 * DGPU)
    tail = WorldTail(store)
    payee = str(Keypair().pubkey())
    await request(store, tail, payee, 10 * DGPU)

    def crash(at: str) -> None:
        if at == point:
            raise Crash(at)

    with pytest.raises(Crash):
        await settlement(treasury, store, tail, clock, crash).step()
    # A new process: its world from the log, the chain as the crash left it.
    tail = WorldTail(store)
    await tail.catch_up()
    assert await settlement(treasury, store, tail, clock).step() == 0
    assert await treasury.token_balance(payee) == 10 * DGPU
    kinds = [type(e).__name__ for e in await paid_events(store)]
    # Crashed after signing but before recording: that transaction was never sent, and the
    # next process signed its own (attempt 1 again: nothing was recorded).
    assert kinds == ["PayoutSigned", "FundsWithdrawn"]


async def test_a_dropped_transaction_is_sent_again_until_it_lands(
    store: EventStore, treasury: LocalChain, clock: Clock
) -> None:
    await treasury.faucet(treasury.treasury, 50 * DGPU)
    tail = WorldTail(store)
    payee = str(Keypair().pubkey())
    await request(store, tail, payee, 10 * DGPU)
    treasury.drop_next(2)
    settle = settlement(treasury, store, tail, clock)
    assert await settle.step() == 1  # signed, recorded, sent: dropped
    assert await settle.step() == 1  # not on chain, still valid: sent again, dropped again
    assert await settle.step() == 0  # sent again: it lands, and is paid
    signed = [e for e in await paid_events(store) if isinstance(e, ev.PayoutSigned)]
    assert len(signed) == 1  # one transaction, sent three times
    assert await treasury.token_balance(payee) == 10 * DGPU


async def test_an_expired_transaction_is_signed_anew_only_once_it_cannot_land(
    store: EventStore, treasury: LocalChain, clock: Clock, wall: Wall
) -> None:
    await treasury.faucet(treasury.treasury, 50 * DGPU)
    tail = WorldTail(store)
    payee = str(Keypair().pubkey())
    await request(store, tail, payee, 10 * DGPU)
    treasury.drop_next(1)
    settle = settlement(treasury, store, tail, clock)
    await settle.step()
    (first,) = await paid_events(store)
    assert isinstance(first, ev.PayoutSigned)
    # Past its last valid block height, and not on chain: it can never land.
    wall.now += 0.4 * (BLOCKHASH_VALIDITY + 2)
    assert await settle.step() == 0  # signs attempt 2, records it, sends it: paid
    events = await paid_events(store)
    assert [type(e).__name__ for e in events] == ["PayoutSigned", "PayoutSigned", "FundsWithdrawn"]
    second, paid = events[1], events[2]
    assert isinstance(second, ev.PayoutSigned) and second.attempt == 2
    assert second.signature != first.signature
    assert isinstance(paid, ev.FundsWithdrawn) and paid.signature == second.signature
    # The first can never land now, even sent again.
    with pytest.raises(ChainError, match="Blockhash not found"):
        await treasury.send(base64.b64decode(first.transaction))
    assert await treasury.token_balance(payee) == 10 * DGPU


async def test_an_unpayable_address_gives_the_funds_back(
    store: EventStore, treasury: LocalChain, clock: Clock
) -> None:
    await treasury.faucet(treasury.treasury, 50 * DGPU)
    tail = WorldTail(store)
    await request(store, tail, "z" * 44, 10 * DGPU)  # base58, but no public key
    assert await settlement(treasury, store, tail, clock).step() == 0
    (failed,) = await paid_events(store)
    assert isinstance(failed, ev.WithdrawalFailed) and "invalid payout address" in failed.reason
    wallet = tail.world.wallet("bob")
    assert (wallet.available, wallet.pending, wallet.withdrawn) == (10 * DGPU, 0, 0)
    assert await treasury.token_balance(treasury.treasury) == 50 * DGPU


async def test_an_unreachable_chain_gives_the_funds_back_after_the_deadline_only(
    store: EventStore, tmp_path: Path, clock: Clock
) -> None:
    chain = Offline(tmp_path / "offline")
    tail = WorldTail(store)
    await request(store, tail, str(Keypair().pubkey()), 10 * DGPU)
    settle = settlement(chain, store, tail, clock, payout_deadline_s=600)
    assert await settle.step() == 1  # unreachable: it waits
    assert await paid_events(store) == []
    clock.advance(600)
    assert await settle.step() == 0
    (failed,) = await paid_events(store)
    assert isinstance(failed, ev.WithdrawalFailed)
    assert "could not be reached" in failed.reason and "connection refused" in failed.reason
    assert tail.world.wallet("bob").available == 10 * DGPU


async def test_a_signed_payout_is_never_given_back_while_it_may_land(
    store: EventStore, treasury: LocalChain, tmp_path: Path, clock: Clock
) -> None:
    await treasury.faucet(treasury.treasury, 50 * DGPU)
    tail = WorldTail(store)
    payee = str(Keypair().pubkey())
    await request(store, tail, payee, 10 * DGPU)

    def crash(at: str) -> None:
        if at == "recorded":
            raise Crash(at)

    with pytest.raises(Crash):
        await settlement(treasury, store, tail, clock, crash).step()
    # The chain goes away for longer than the deadline: the recorded transaction may still
    # be out there, so the funds stay pending.
    offline = Offline(tmp_path / "offline")
    clock.advance(7200)
    assert await settlement(offline, store, tail, clock).step() == 1
    assert [type(e).__name__ for e in await paid_events(store)] == ["PayoutSigned"]
    # Back: the recorded transaction is still valid; it is sent and paid.
    assert await settlement(treasury, store, tail, clock).step() == 0
    assert await treasury.token_balance(payee) == 10 * DGPU
    assert NOW  # the factories' time


async def test_two_equal_withdrawals_to_one_address_are_two_transactions(
    store: EventStore, treasury: LocalChain, clock: Clock
) -> None:
    # Found by the property test: the same amount to the same address in the same block
    # was one transaction (one signature) for two withdrawals. Each payout's memo names its
    # withdrawal, so they differ.
    await treasury.faucet(treasury.treasury, 50 * DGPU)
    tail = WorldTail(store)
    payee = str(Keypair().pubkey())
    await request(store, tail, payee, 10 * DGPU)
    await request(store, tail, payee, 10 * DGPU)
    assert await settlement(treasury, store, tail, clock).step() == 0
    paid = [e for e in await paid_events(store) if isinstance(e, ev.FundsWithdrawn)]
    assert len({e.signature for e in paid}) == 2
    assert await treasury.token_balance(payee) == 20 * DGPU
    transfer = await treasury.transfer(paid[0].signature or "")
    assert transfer is not None and transfer.memo == f"dante:payout:{paid[0].withdrawal_id}"
