"""`dante chain …`: the chain dGPU settles on, an address's balance, the local faucet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from cyclopts import App, Parameter

from dante.cli.options import Json
from dante.cli.render import dgpu, emit, pairs
from dante.cli.session import Session, with_session

app = App(name="chain", help="The Solana chain dGPU lives on: status, balances, test dGPU.")

KeypairOption = Annotated[
    Path | None,
    Parameter(
        help="Your Solana keypair (the Solana CLI's JSON format). "
        "Default: $SOLANA_KEYPAIR, else ~/.config/solana/id.json."
    ),
]


def _address(keypair: Path | None, *, create: bool = False) -> tuple[str, Path | None]:
    """The keypair's address; with `create`, a missing keypair is made (and said so)."""
    from dante.chain.keys import default_keypair_path, load_or_create, read_keypair

    path = keypair or default_keypair_path()
    if create and not path.exists():
        made = load_or_create(path)
        return str(made.pubkey()), path
    return str(read_keypair(path).pubkey()), None


async def show_status(s: Session, *, json: bool = False) -> int:
    from dante.schemas.commands import GetChain

    info = await s.reader().ask(GetChain())
    if json:
        emit(info)
        return 0
    print(
        pairs(
            [
                ("cluster", info.cluster + (" (embedded in dante up)" if info.local else "")),
                ("mint", f"{info.mint} (dGPU, {info.decimals} decimals)"),
                ("treasury", info.treasury),
                ("token account", info.treasury_account),
                ("balance", f"{dgpu(info.treasury_balance_udgpu)} dGPU"),
                ("slot", str(info.slot)),
            ]
        )
    )
    return 0


async def show_balance(s: Session, address: str, *, json: bool = False) -> int:
    from dante.schemas.commands import GetChain

    info = await s.reader().ask(GetChain(address=address))
    udgpu, lamports = info.address_balance_udgpu or 0, info.address_lamports or 0
    if json:
        emit(
            {
                "address": address,
                "balance_udgpu": udgpu,
                "lamports": lamports,
                "cluster": info.cluster,
            }
        )
        return 0
    print(f"{address}: {dgpu(udgpu)} dGPU, {lamports / 1e9:.9g} SOL on the {info.cluster} chain")
    return 0


async def give(s: Session, address: str, amount: int, *, made: Path | None, json: bool) -> int:
    from dante.client.payments import faucet as ask_faucet

    result = await ask_faucet(s.reader(), address, amount)
    if json:
        emit(result)
        return 0
    if made is not None:
        print(f"Made a new Solana keypair at {made} (keep it: it holds your dGPU).")
    print(
        f"{address} got {dgpu(amount)} test dGPU (and SOL for fees): it holds "
        f"{dgpu(result.balance_udgpu)} dGPU. Deposit it with `dante wallet deposit AMOUNT`."
    )
    return 0


@app.command
async def status(*, json_output: Json = False) -> int:
    """The cluster, the dGPU mint, the treasury and its balance, the current slot."""
    return await with_session(lambda s: show_status(s, json=json_output))


@app.command
async def balance(
    address: str | None = None, /, *, keypair: KeypairOption = None, json_output: Json = False
) -> int:
    """The dGPU (and SOL) an address holds on chain.

    Parameters
    ----------
    address
        A Solana address. Default: your keypair's.
    """
    if address is not None:
        _check(address)
    found = address if address is not None else _address(keypair)[0]
    return await with_session(lambda s: show_balance(s, found, json=json_output))


@app.command
async def faucet(
    first: Annotated[str, Parameter(name="ADDRESS_OR_AMOUNT")],
    second: Annotated[str | None, Parameter(name="AMOUNT")] = None,
    /,
    *,
    keypair: KeypairOption = None,
    json_output: Json = False,
) -> int:
    """Test dGPU and SOL for fees, on the local chain only (`dante up`'s):
    `dante chain faucet [ADDRESS] AMOUNT`.

    Without an address, your keypair is funded (and made if you have none).

    Parameters
    ----------
    first
        The Solana address to fund, followed by the amount; or the amount alone.
    second
        dGPU to mint, as a decimal (at most 6 decimals).
    """
    from dante.schemas.money import parse_dgpu

    to, amount = (first, second) if second is not None else (None, first)
    udgpu = parse_dgpu(amount)
    made: Path | None = None
    if to is not None:
        _check(to)
        address = to
    else:
        address, made = _address(keypair, create=True)
    return await with_session(lambda s: give(s, address, udgpu, made=made, json=json_output))


def _check(address: str) -> None:
    import re

    from dante.cli.options import UsageError

    if not re.fullmatch(r"[1-9A-HJ-NP-Za-km-z]{32,44}", address):
        raise UsageError(f"{address!r} is not a Solana address (32 to 44 base58 characters)")
