"""Exactly-once payouts under random histories: deposits paid on a real (local) chain, jobs,
withdrawals, dropped transactions, expired blockhashes, and the settlement crashing at every
point it can. After it all: no withdrawal paid twice, none lost, every payout on chain once,
and the audit against the chain clean."""

from __future__ import annotations

import base64
import contextlib
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from solders.keypair import Keypair

from dante.chain import spl
from dante.chain.local import BLOCKHASH_VALIDITY, LocalChain
from dante.domain.deciders.context import VerifiedPayment
from dante.handlers.settlement import Settlement
from dante.projections.audit.chain import check, gather
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.schemas.chain import ChainAudit, deposit_memo
from tests.factories import SOLANA
from tests.handlers.sim import Sim, now_or_never
from tests.handlers.test_money_properties import DGPU, RENTERS, check_invariants, ops, run


class Wall:
    def __init__(self) -> None:
        self.now = 5_000_000.0

    def __call__(self) -> float:
        return self.now


class Crash(Exception):
    pass


POINTS = ["signed", "recorded", "sent", "paid"]

settlement_ops = st.one_of(
    st.tuples(st.just("settle"), st.sampled_from([None, *POINTS]), st.booleans()),
    st.tuples(st.just("expire")),
    st.tuples(st.just("pay"), st.sampled_from(RENTERS), st.integers(1, 20 * DGPU)),
    st.tuples(
        st.just("withdraw"), st.sampled_from(["bob", "carol"]), st.integers(10 * DGPU, 40 * DGPU)
    ),
)


class World:
    """The simulation, its chain, and the settlement (made again after every crash)."""

    def __init__(self, folder: Path) -> None:
        self.sim = Sim()
        self.wall = Wall()
        self.chain = LocalChain(folder, clock=self.wall)
        self.crashes = 0

    def settlement(self, crash_at: str | None) -> Settlement:
        def fault(point: str) -> None:
            if point == crash_at:
                raise Crash(point)

        return Settlement(
            self.chain,
            self.sim.log,
            lambda: self.sim.world,
            clock=lambda: self.sim.now,
            fault=fault,
        )

    def pay(self, renter: str, amount: int) -> None:
        """A renter pays on chain and the deposit is credited from what the chain shows."""
        payer = Keypair()
        now_or_never(self.chain.faucet(str(payer.pubkey()), amount))
        blockhash, _ = now_or_never(self.chain.latest_blockhash())
        tx = spl.deposit_transaction(
            payer,
            mint=self.chain.mint,
            treasury=self.chain.treasury,
            amount=amount,
            note=deposit_memo(renter),
            blockhash=blockhash,
        )
        signature = now_or_never(self.chain.send(bytes(tx)))
        payment = VerifiedPayment(
            signature=signature,
            transfer=now_or_never(self.chain.transfer(signature)),
            mint=self.chain.mint,
            treasury_account=self.chain.treasury_account,
        )
        command = cmd.Deposit(command_id="x" * 8, amount=amount, signature=signature)
        self.sim.command("renter", renter, command, payment)

    def step(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "settle":
            _, crash_at, drop = op
            if drop:
                self.chain.drop_next()
            try:
                now_or_never(self.settlement(crash_at).step())
            except Crash:
                self.crashes += 1
            self.sim.world.position = len(self.sim.log.records)
            self.sim.settle()
        elif kind == "expire":
            self.wall.now += 0.4 * (BLOCKHASH_VALIDITY + 1)
        elif kind in ("pay", "deposit"):
            self.pay(str(op[1]), int(op[2]))
        else:
            run(self.sim, op, {})

    def finish(self) -> None:
        """Settle everything left: the chain answers, nothing crashes any more."""
        for _ in range(4):
            if not self.sim.world.open_payouts:
                return
            now_or_never(self.settlement(None).step())
            self.sim.world.position = len(self.sim.log.records)
            self.wall.now += 0.4 * (BLOCKHASH_VALIDITY + 1)
        assert not self.sim.world.open_payouts, "a withdrawal was never settled"


def check_exactly_once(world: World) -> None:
    events = world.sim.events()
    requested = {e.withdrawal_id: e for e in events if isinstance(e, ev.WithdrawalRequested)}
    paid = Counter(e.withdrawal_id for e in events if isinstance(e, ev.FundsWithdrawn))
    failed = Counter(e.withdrawal_id for e in events if isinstance(e, ev.WithdrawalFailed))
    assert all(n == 1 for n in paid.values()), "a withdrawal was paid twice"
    assert not failed, "a payable withdrawal failed"
    assert set(paid) == set(requested), "a withdrawal was lost"
    assert requested, "nothing was withdrawn"
    # On chain: each withdrawal's paid transaction landed, every other one it signed did not.
    chain = world.chain
    final = {e.signature for e in events if isinstance(e, ev.FundsWithdrawn)}
    for signed in (e for e in events if isinstance(e, ev.PayoutSigned)):
        landed = now_or_never(chain.signature_status(signed.signature)) is not None
        assert landed == (signed.signature in final), "a second transaction of one payout landed"
        if not landed:  # and it never can
            with contextlib.suppress(Exception):
                now_or_never(chain.send(base64.b64decode(signed.transaction)))
            assert now_or_never(chain.signature_status(signed.signature)) is None
    total = sum(e.amount for e in requested.values())
    assert now_or_never(chain.token_balance(SOLANA)) == total
    # The audit against the chain is clean.
    facts = gather((r.seq, r.event) for r in world.sim.log.records)
    audit = ChainAudit(
        cluster=chain.cluster,
        mint=chain.mint,
        treasury=chain.treasury,
        treasury_account=chain.treasury_account,
        treasury_balance_udgpu=now_or_never(chain.token_balance(chain.treasury)),
        transfers=[
            t for s in facts.signatures() if (t := now_or_never(chain.transfer(s))) is not None
        ],
    )
    assert check(facts, audit) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(ops, settlement_ops, settlement_ops), min_size=5, max_size=50))
def test_payouts_are_exactly_once_whatever_crashes(steps: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        world = World(Path(folder) / "chain")
        prologue: list[tuple[Any, ...]] = [
            ("register", "prv-1", 2, DGPU // 2),
            ("register", "prv-3", 1, DGPU // 4),
            ("pay", "alice", 30 * DGPU),
            ("submit", "alice", 1, None),
            ("start", 0),
            ("tick", 0, 900),
            ("finish", 0, 0),
            # Earnings stand in for a deposit to the providers: withdrawals to pay.
            ("pay", "bob", 100 * DGPU),
            ("pay", "carol", 60 * DGPU),
            ("withdraw", "bob", 20 * DGPU),
        ]
        for op in prologue + steps:
            world.step(op)
            check_invariants(world.sim)
        world.finish()
        check_invariants(world.sim)
        check_exactly_once(world)
