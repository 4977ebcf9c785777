"""`dante wallet …` and `dante balance` against a running platform."""

from __future__ import annotations

import pytest

from dante.client.commands import Client
from dante.domain.settings import Settings
from dante.services.admission import Admission
from tests.cli.cli import run_dante
from tests.cli.conftest import Market
from tests.factories import SOLANA
from tests.funding import fund
from tests.handlers.harness import DGPU

NOWHERE = "nats://127.0.0.1:1"


@pytest.mark.anyio
async def test_deposit_balance_and_history(market: Market) -> None:
    # No keypair yet: nothing to pay with.
    ran = await market.dante("wallet", "deposit", "12.5")
    assert ran.code == 2 and "no keypair at" in ran.err, ran
    ran = await market.dante("chain", "faucet", "20")
    assert ran.code == 0, ran
    assert "Made a new Solana keypair" in ran.out and "got 20.00 test dGPU" in ran.out

    ran = await market.dante("wallet", "deposit", "12.5", "--reference", "pay-1")
    assert ran.code == 0, ran
    assert "Deposited 12.50 dGPU into alice (transaction " in ran.out
    assert "available  12.50 dGPU" in ran.out

    ran = await market.dante("wallet", "deposit", "0.000001", "--json")
    assert ran.code == 0, ran
    deposited = ran.json()
    assert deposited["deposited_udgpu"] == 1
    assert deposited["available_udgpu"] == 12_500_001
    # The same transfer again, by its signature: credited once only.
    again = await market.dante(
        "wallet", "deposit", "0.000001", "--signature", deposited["signature"]
    )
    assert again.code == 1 and "already credited" in again.err, again
    # More than the keypair holds: refused before anything is sent.
    ran = await market.dante("wallet", "deposit", "8")
    assert ran.code == 1 and "holds 7.499999 dGPU" in ran.err, ran
    chain = (await market.dante("chain", "status", "--json")).json()
    assert chain["cluster"] == "local" and chain["treasury_balance_udgpu"] == 12_500_001

    balance = (await market.dante("wallet", "balance", "--json")).json()
    assert (balance["available_udgpu"], balance["held_udgpu"], balance["total_udgpu"]) == (
        12_500_001,
        0,
        12_500_001,
    )
    # The original client's verb is a shortcut for the same thing.
    shortcut = await market.dante("balance")
    assert shortcut.code == 0, shortcut
    assert "total      12.500001 dGPU" in shortcut.out

    history = (await market.dante("wallet", "history", "--json")).json()
    assert history["wallet_id"] == "alice"
    assert [(e["kind"], e["amount_udgpu"]) for e in history["entries"]] == [
        ("deposit", 1),
        ("deposit", 12_500_000),
    ]
    table = await market.dante("wallet", "history")
    header, newest, oldest = table.out.splitlines()
    assert header.split() == [
        "SEQ",
        "WHEN",
        "KIND",
        "AMOUNT",
        "AVAILABLE",
        "HELD",
        "JOB",
        "REFERENCE",
        "TRANSACTION",
    ]
    assert "+0.000001" in newest and newest.split()[-1] == deposited["signature"]
    assert oldest.split()[-2] == "pay-1"


@pytest.mark.parametrize(
    ("amount", "why"),
    [
        ("0", "zero"),
        ("1.0000001", "more than 6 decimals"),
        ("-3", "not an amount"),
        ("1e3", "not an amount"),
        ("1,5", "not an amount"),
        ("ten", "not an amount"),
    ],
)
def test_amounts_that_are_not_a_positive_whole_number_of_udgpu_are_refused(
    amount: str, why: str
) -> None:
    # Refused before connecting: no platform answers there, which would be exit code 3.
    ran = run_dante("wallet", "deposit", amount, url=NOWHERE, user="alice")
    assert ran.code == 2, ran
    assert why in ran.err and ran.err.startswith("error: ")
    assert len(ran.err.strip().splitlines()) == 1 and "Traceback" not in ran.err


@pytest.mark.anyio
async def test_withdraw_is_for_providers_with_earnings(market: Market) -> None:
    ran = await market.dante("wallet", "withdraw", "20", user="bob")
    assert ran.code == 1, ran
    assert ran.err.startswith("error: only 0 dGPU is available to withdraw")
    assert "dante wallet deposit" not in ran.err  # a provider earns; it does not deposit
    assert ran.err.strip().endswith("providers withdraw what their GPUs earned")

    ran = await market.dante("wallet", "withdraw", "20", "--json", user="bob")
    assert ran.code == 1
    assert ran.json()["error"]["code"] == "insufficient_funds"
    assert ran.json()["error"]["field"] == "amount"

    # Earnings arrive as credits; a deposit (paid on chain) stands in for them here.
    await fund(Client(market.nc, "renter", "bob"), 30 * DGPU)
    ran = await market.dante("wallet", "withdraw", "20", "--to", SOLANA, "--json", user="bob")
    assert ran.code == 0, ran
    result = ran.json()
    assert result["requested_udgpu"] == 20 * DGPU
    assert result["available_udgpu"] == 10 * DGPU
    assert result["pending_withdrawal_udgpu"] == 20 * DGPU
    # The settlement pays it on chain: the payout address holds the dGPU.
    assert await market.platform.settle_payouts() == 0
    ran = await market.dante("chain", "balance", SOLANA, "--json", user="bob")
    assert ran.code == 0, ran
    assert ran.json()["balance_udgpu"] == 20 * DGPU
    entries = (await market.dante("wallet", "history", "--json", user="bob")).json()["entries"]
    paid = next(e for e in entries if e["kind"] == "withdrawal")
    assert paid["amount_udgpu"] == 20 * DGPU and paid["reference"] == result["withdrawal_id"]
    transfer = await market.platform.chain.transfer(paid["signature"])  # type: ignore[union-attr]
    assert transfer is not None and transfer.amount == 20 * DGPU
    balance = (await market.dante("wallet", "balance", "--json", user="bob")).json()
    assert (balance["withdrawn_udgpu"], balance["pending_withdrawal_udgpu"]) == (20 * DGPU, 0)

    ran = await market.dante("wallet", "withdraw", "1", "--to", "not-an-address", user="bob")
    assert ran.code == 2 and "Solana address" in ran.err


@pytest.mark.anyio
async def test_who_and_where_are_needed(market: Market) -> None:
    ran = await market.dante("wallet", "balance", user=None)
    assert ran.code == 2
    assert ran.err.strip() == (
        "error: you are not logged in: run `dante login` (or `dante account create`), "
        "or set DANTE_USERNAME and DANTE_PASSWORD"
    )
    # --user anywhere on the line names the account, and wins over the environment.
    assert (await market.dante("chain", "faucet", "1", user="alice")).code == 0
    ran = await market.dante("wallet", "deposit", "1", "--user", "carol", user="alice")
    assert ran.code == 0 and "into carol" in ran.out, ran
    ran = await market.dante("--user", "Bad Name", "balance", user=None)
    assert ran.code == 2 and "is not an account name" in ran.err

    ran = await market.dante("balance", "--json", "--nats-url", NOWHERE)
    assert ran.code == 3, ran
    error = ran.json()["error"]
    assert error["code"] == "unreachable"
    assert "cannot reach the platform at nats://127.0.0.1:1" in error["message"]
    ran = await market.dante("balance", "--nats-url", NOWHERE)
    assert ran.code == 3 and ran.out == ""
    assert ran.err.startswith("error: cannot reach the platform at nats://127.0.0.1:1")
    assert "dante up" in ran.err


@pytest.mark.anyio
async def test_budget_set_shown_in_the_balance_and_cleared(market: Market) -> None:
    ran = await market.dante("wallet", "budget")
    assert ran.code == 2 and "give --daily AMOUNT, --monthly AMOUNT, or --clear" in ran.err
    ran = await market.dante("wallet", "budget", "--daily", "-1")
    assert ran.code == 2, ran
    ran = await market.dante("wallet", "budget", "--daily", "5", "--monthly", "2")
    assert ran.code == 1 and "above the monthly cap" in ran.err

    assert (await market.dante("chain", "faucet", "10")).code == 0
    assert (await market.dante("wallet", "deposit", "10")).code == 0
    ran = await market.dante("wallet", "budget", "--daily", "2.5", "--monthly", "40")
    assert ran.code == 0, ran
    assert "Budget of alice (UTC days and calendar months):" in ran.out
    assert "daily         0.00 of 2.50 dGPU spent" in ran.out
    assert "may hold now  2.50 dGPU" in ran.out
    balance = await market.dante("wallet", "balance")
    assert "budget today: 0.00 of 2.50 dGPU spent" in balance.out
    assert "budget this month: 0.00 of 40.00 dGPU spent" in balance.out
    document = (await market.dante("wallet", "balance", "--json")).json()
    assert (document["budget_daily_udgpu"], document["budget_monthly_udgpu"]) == (
        2_500_000,
        40 * DGPU,
    )

    ran = await market.dante("wallet", "budget", "--clear", "--json")
    assert ran.code == 0, ran
    assert (ran.json()["daily_udgpu"], ran.json()["monthly_udgpu"]) == (None, None)
    balance = await market.dante("wallet", "balance")
    assert "budget" not in balance.out


@pytest.mark.anyio
async def test_a_rate_limited_command_says_so_and_how_long_to_wait(market: Market) -> None:
    # One request a minute for every account: the second one is refused, and still is
    # after the one retry the client makes (it waits at most 5 s).
    service = market.platform.service
    service.admission = Admission(Settings(request_rate=1 / 60, request_burst=1))
    assert (await market.dante("balance", user="mallory")).code == 0
    ran = await market.dante("balance", "--json", user="mallory")
    assert ran.code == 1
    error = ran.json()["error"]
    assert error["code"] == "rate_limited"
    assert "rate limited: mallory sends more requests" in error["message"]
    assert "retried once" in error["hint"]
    assert 50_000 < error["retry_after_ms"] <= 60_000
    ran = await market.dante("balance", user="mallory")
    assert ran.code == 1
    assert ran.err.startswith("error: rate limited: mallory sends more requests than the")
    assert "retry in " in ran.err
