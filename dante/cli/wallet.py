"""`dante wallet …`: deposit, balance, history and (for providers) withdraw.

Amounts on the command line are decimal dGPU strings, parsed exactly (`parse_dgpu`); anything
that is not a positive whole number of µdGPU is a usage error, refused before anything is sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from cyclopts import App, Parameter

from dante.cli.failures import Hinted
from dante.cli.options import Json
from dante.cli.render import dgpu, emit, pairs, table, to_builtins, when
from dante.cli.session import Session, with_session

if TYPE_CHECKING:
    from solders.keypair import Keypair

app = App(
    name="wallet",
    help="Your money on Dante: deposit, check, read the history, set budgets, withdraw.",
)


def _signed(udgpu: int) -> str:
    return ("+" if udgpu > 0 else "") + dgpu(udgpu) if udgpu else ""


def _amounts(items: list[tuple[str, int]]) -> str:
    """Labels and amounts, the amounts right-aligned."""
    width = max(len(dgpu(amount)) for _, amount in items)
    return pairs((label, f"{dgpu(amount):>{width}} dGPU") for label, amount in items)


# ── actions (the verbs and the menu share them) ─────────────────────────────────────────


async def show_balance(s: Session, *, json: bool = False) -> int:
    from dante.schemas.commands import GetBalance

    balance = await s.renter().ask(GetBalance())
    if json:
        emit(balance)
        return 0
    lines: list[tuple[str, int]] = [
        ("available", balance.available_udgpu),
        ("held", balance.held_udgpu),
        ("total", balance.total_udgpu),
    ]
    if balance.pending_withdrawal_udgpu:
        lines.append(("withdrawing", balance.pending_withdrawal_udgpu))
    if balance.earned_udgpu:
        lines.append(("earned", balance.earned_udgpu))
    print(f"wallet {balance.wallet_id}")
    print(_amounts(lines))
    for hold in balance.holds:
        print(f"  {dgpu(hold.held_udgpu)} dGPU held for job {hold.job_id} (attempt {hold.attempt})")
    for label, cap, spent in (
        ("today", balance.budget_daily_udgpu, balance.spent_today_udgpu),
        ("this month", balance.budget_monthly_udgpu, balance.spent_this_month_udgpu),
    ):
        if cap is not None:
            print(f"budget {label}: {dgpu(spent)} of {dgpu(cap)} dGPU spent")
    for warning in balance.warnings:
        if warning.budget:
            print(
                f"warning: job {warning.job_id} needs {dgpu(warning.needed_udgpu)} dGPU more "
                f"held than your {warning.budget} budget leaves, and stops at "
                f"{when(warning.stop_at)} unless you raise it "
                f"(dante wallet budget --{warning.budget} AMOUNT)"
            )
        else:
            print(
                f"warning: job {warning.job_id} needs {dgpu(warning.needed_udgpu)} dGPU more and "
                f"stops at {when(warning.stop_at)} unless you deposit "
                "(dante wallet deposit AMOUNT)"
            )
    return 0


async def set_budget(
    s: Session,
    *,
    daily: int | None,
    monthly: int | None,
    clear: bool,
    json: bool = False,
) -> int:
    from dante.client.commands import new_command_id
    from dante.schemas.commands import SetBudget

    command = SetBudget(command_id=new_command_id(), daily=daily, monthly=monthly, clear=clear)
    result = await s.renter().ask(command)
    if json:
        emit(result)
        return 0
    if result.daily_udgpu is None and result.monthly_udgpu is None:
        print(f"No budget on {result.wallet_id}: jobs are limited by the balance only.")
        return 0
    print(f"Budget of {result.wallet_id} (UTC days and calendar months):")
    lines = []
    if result.daily_udgpu is not None:
        lines.append(
            ("daily", f"{dgpu(result.spent_today_udgpu)} of {dgpu(result.daily_udgpu)} dGPU spent")
        )
    if result.monthly_udgpu is not None:
        lines.append(
            (
                "monthly",
                f"{dgpu(result.spent_this_month_udgpu)} of {dgpu(result.monthly_udgpu)} dGPU spent",
            )
        )
    lines.append(("may hold now", f"{dgpu(result.spendable_udgpu)} dGPU"))
    print(pairs(lines))
    return 0


async def make_deposit(
    s: Session,
    amount: int,
    *,
    reference: str = "",
    keypair: Path | None = None,
    signature: str | None = None,
    top_up: bool = False,
    json: bool = False,
) -> int:
    """Pay `amount` from the keypair to the treasury and have it credited; or, with a
    signature, credit a transfer made elsewhere. With `top_up` (the menu), on the local chain
    a keypair is made if missing and given what it lacks from the faucet first."""
    from dante.client.commands import new_command_id

    if signature is not None:
        from dante.schemas.commands import Deposit

        command = Deposit(
            command_id=new_command_id(), amount=amount, reference=reference, signature=signature
        )
        result = await s.renter().ask(command)
    else:
        from dante.chain.keys import default_keypair_path, read_keypair
        from dante.client.payments import pay_deposit

        path = keypair or default_keypair_path()
        payer = await _topped_up(s, path, amount) if top_up else read_keypair(path)
        signature, result = await pay_deposit(
            s.renter(), payer, amount, command_id=new_command_id(), reference=reference
        )
    if json:
        emit({**to_builtins(result), "deposited_udgpu": amount, "signature": signature})
        return 0
    print(f"Deposited {dgpu(amount)} dGPU into {result.wallet_id} (transaction {signature}).")
    print(
        _amounts(
            [
                ("available", result.available_udgpu),
                ("held", result.held_udgpu),
                ("total", result.total_udgpu),
            ]
        )
    )
    return 0


async def _topped_up(s: Session, path: Path, amount: int) -> Keypair:
    from dante.chain.keys import load_or_create
    from dante.client.payments import faucet
    from dante.schemas.commands import GetChain

    payer = load_or_create(path)
    address = str(payer.pubkey())
    info = await s.reader().ask(GetChain(address=address))
    short = amount - (info.address_balance_udgpu or 0)
    if info.local and short > 0:
        await faucet(s.reader(), address, short)
        print(
            f"Your keypair {address} ({path}) held too little: the local chain's faucet gave "
            f"it {dgpu(short)} test dGPU."
        )
    return payer


async def show_history(
    s: Session, *, limit: int = 50, before: int | None = None, json: bool = False
) -> int:
    from dante.schemas.commands import GetWalletHistory

    command = GetWalletHistory(limit=limit, before_seq=before)
    entries = await s.renter().ask(command)
    if json:
        emit({"wallet_id": s.renter().identity, "entries": entries})
        return 0
    if not entries:
        print("No money has moved in this wallet yet.")
        return 0
    rows: list[tuple[str, ...]] = [
        (
            str(e.seq),
            when(e.at),
            e.kind,
            dgpu(e.amount_udgpu),
            _signed(e.available_delta_udgpu),
            _signed(e.held_delta_udgpu),
            e.job_id or "",
            # Charges and holds carry the platform's own references; people wrote these.
            e.reference if e.kind.startswith(("deposit", "withdrawal")) else "",
            e.signature or "",
        )
        for e in entries
    ]
    headers: tuple[str, ...] = ("SEQ", "WHEN", "KIND", "AMOUNT", "AVAILABLE", "HELD", "JOB")
    headers += ("REFERENCE", "TRANSACTION")
    if not any(e.signature for e in entries):
        headers, rows = headers[:-1], [row[:-1] for row in rows]
    print(table(headers, rows, right=(0, 3, 4, 5)))
    if len(entries) == limit:
        print(f"(older entries: dante wallet history --before {entries[-1].seq})")
    return 0


async def make_withdrawal(
    s: Session, amount: int, *, to: str | None = None, json: bool = False
) -> int:
    from dante.client.commands import CommandError, new_command_id
    from dante.schemas.commands import Withdraw

    command = Withdraw(command_id=new_command_id(), amount=amount, payout_address=to)
    try:
        result = await s.provider().ask(command)
    except CommandError as exc:
        if exc.code == "insufficient_funds":
            raise Hinted(exc, "providers withdraw what their GPUs earned") from None
        raise
    if json:
        emit({**to_builtins(result), "requested_udgpu": amount})
        return 0
    print(
        f"Withdrawal {result.withdrawal_id} of {dgpu(amount)} dGPU requested: the platform "
        "pays it on chain in a moment (`dante wallet history` shows its transaction)."
    )
    print(
        _amounts(
            [
                ("available", result.available_udgpu),
                ("withdrawing", result.pending_withdrawal_udgpu),
            ]
        )
    )
    return 0


# ── the verbs ───────────────────────────────────────────────────────────────────────────


@app.command
async def deposit(
    amount: str,
    /,
    *,
    keypair: Annotated[
        Path | None,
        Parameter(
            help="The Solana keypair that pays (the Solana CLI's JSON format). "
            "Default: $SOLANA_KEYPAIR, else ~/.config/solana/id.json."
        ),
    ] = None,
    signature: Annotated[
        str | None,
        Parameter(
            help="Credit a transfer you made from another wallet app, by its signature; its "
            "memo must be dante:deposit:YOUR_ACCOUNT."
        ),
    ] = None,
    reference: str = "",
    json_output: Json = False,
) -> int:
    """Pay dGPU into your wallet: a transfer to the platform's treasury, verified on chain.

    Parameters
    ----------
    amount
        dGPU to add, as a decimal: 10, 0.5, 1.000001 (at most 6 decimals).
    reference
        A note kept with the deposit.
    """
    import re

    from dante.cli.options import UsageError
    from dante.schemas.money import parse_dgpu

    udgpu = parse_dgpu(amount)
    if signature is not None and not re.fullmatch(r"[1-9A-HJ-NP-Za-km-z]{64,90}", signature):
        raise UsageError(f"--signature {signature!r} is not a Solana transaction signature")
    if signature is not None and keypair is not None:
        raise UsageError("--signature credits a transfer already made: it takes no --keypair")
    return await with_session(
        lambda s: make_deposit(
            s,
            udgpu,
            reference=reference,
            keypair=keypair,
            signature=signature,
            json=json_output,
        )
    )


@app.command
async def balance(*, json_output: Json = False) -> int:
    """Show your wallet: what is available, what is held for running jobs, the total."""
    return await with_session(lambda s: show_balance(s, json=json_output))


@app.command
async def budget(
    *,
    daily: Annotated[
        str | None, Parameter(help="Spend at most this many dGPU per UTC day.")
    ] = None,
    monthly: Annotated[
        str | None, Parameter(help="Spend at most this many dGPU per calendar month (UTC).")
    ] = None,
    clear: Annotated[bool, Parameter(help="Remove both caps.", negative=())] = False,
    json_output: Json = False,
) -> int:
    """Cap what your jobs spend per day and/or month.

    Billing holds no more than a cap leaves (what the period's charges took plus what is
    held): a job that would pass it waits for the next day or month, and a running job
    whose hold the cap cannot renew stops after the grace period. A cap not given stays.
    """
    from dante.cli.options import UsageError
    from dante.schemas.money import parse_dgpu

    if clear and (daily is not None or monthly is not None):
        raise UsageError("--clear removes both caps; give it without --daily or --monthly")
    if not clear and daily is None and monthly is None:
        raise UsageError("give --daily AMOUNT, --monthly AMOUNT, or --clear")

    def amount(text: str | None) -> int | None:
        # A cap of 0 is allowed: nothing may be spent in the period.
        return None if text is None else parse_dgpu(text, allow_zero=True)

    caps = amount(daily), amount(monthly)
    return await with_session(
        lambda s: set_budget(s, daily=caps[0], monthly=caps[1], clear=clear, json=json_output)
    )


@app.command
async def history(
    *,
    limit: Annotated[int, Parameter(help="How many entries, newest first.")] = 50,
    before: Annotated[
        int | None, Parameter(help="Only entries before this sequence (to page back).")
    ] = None,
    json_output: Json = False,
) -> int:
    """List every movement of your money: deposits, holds, charges, releases, payouts."""
    from dante.cli.options import UsageError

    if not 1 <= limit <= 10_000:
        raise UsageError(f"--limit must be between 1 and 10000, not {limit}")
    if before is not None and before < 1:
        raise UsageError(f"--before must be a positive sequence number, not {before}")
    return await with_session(
        lambda s: show_history(s, limit=limit, before=before, json=json_output)
    )


@app.command
async def withdraw(
    amount: str,
    /,
    *,
    to: Annotated[
        str | None,
        Parameter(help="Pay to this Solana address (default: your provider's payout address)."),
    ] = None,
    json_output: Json = False,
) -> int:
    """Withdraw your earnings as a provider.

    Parameters
    ----------
    amount
        dGPU to withdraw, as a decimal (at most 6 decimals).
    """
    import re

    from dante.cli.options import UsageError
    from dante.schemas.money import parse_dgpu

    udgpu = parse_dgpu(amount)
    if to is not None and not re.fullmatch(r"[1-9A-HJ-NP-Za-km-z]{32,44}", to):
        raise UsageError(f"--to {to!r} is not a Solana address (32 to 44 base58 characters)")
    return await with_session(lambda s: make_withdrawal(s, udgpu, to=to, json=json_output))
