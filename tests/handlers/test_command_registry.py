"""What a command is, said once: its class names its role, verb and what it is answered with
(`Command[R]`), and exactly one part of the platform answers it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin

import msgspec
import pytest
from nats.aio.client import Client as NATS

from dante.client.commands import Client
from dante.domain.deciders import DECIDERS
from dante.projections.runner import StoredViews
from dante.schemas import commands as cmd
from dante.schemas.commands import ALL_COMMANDS, reply_type
from dante.schemas.views import Balance, OfferRow
from dante.services.chain import ChainQueries
from dante.services.files import Files
from dante.services.queries import ReadModels
from dante.services.statements import Statements
from tests.funding import fund
from tests.handlers.conftest import Clock
from tests.handlers.harness import running_platform


@pytest.mark.parametrize("kind", ALL_COMMANDS, ids=lambda k: k.__name__)
def test_every_command_says_what_it_is_answered_with(kind: type[cmd.Command[Any]]) -> None:
    answered = reply_type(kind)
    shape = get_args(answered)[0] if get_origin(answered) is list else answered
    assert isinstance(shape, type) and issubclass(shape, msgspec.Struct), answered
    # A reply type is a wire type: it lives with the other contracts.
    assert shape.__module__.startswith("dante.schemas."), shape


def test_a_command_that_does_not_say_is_refused() -> None:
    class Vague(cmd.Command, frozen=True, kw_only=True):  # type: ignore[type-arg]
        pass

    with pytest.raises(TypeError, match="Vague does not say"):
        reply_type(Vague)


def test_every_command_is_answered_by_exactly_one_part(tmp_path: Path) -> None:
    parts: dict[str, frozenset[type[Any]]] = {
        "deciders": frozenset(DECIDERS),
        "queries": ReadModels(StoredViews(tmp_path / "views.sqlite3")).handles,
        "files": Files.handles,
        "statements": Statements.handles,
        "chain": ChainQueries.handles,
    }
    answered: dict[type[Any], list[str]] = {}
    for name, kinds in parts.items():
        for kind in kinds:
            answered.setdefault(kind, []).append(name)
    assert set(answered) == set(ALL_COMMANDS)
    assert {k.__name__: v for k, v in answered.items() if len(v) > 1} == {}


@pytest.mark.anyio
async def test_the_client_decodes_each_answer_as_its_command_says(
    nc: NATS, tmp_path: Path, clock: Clock
) -> None:
    async with running_platform(nc, tmp_path, clock):
        alice = Client(nc, "renter", "alice")
        deposited = await fund(alice, 5_000_000)
        assert type(deposited) is reply_type(cmd.Deposit)
        chain = await alice.ask(cmd.GetChain())
        assert type(chain) is reply_type(cmd.GetChain) and chain.treasury_balance_udgpu == 5_000_000
        assert deposited.available_udgpu == 5_000_000
        balance = await alice.ask(cmd.GetBalance())
        assert isinstance(balance, Balance) and balance.available_udgpu == 5_000_000
        offers = await alice.ask(cmd.ListOffers())
        assert offers == [] or all(isinstance(o, OfferRow) for o in offers)
