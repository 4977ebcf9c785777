"""Every command's --help, as a person reads it."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import pytest
from cyclopts import App

from dante.cli.app import app


def _commands(parent: App, chain: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name in list(parent):
        if name.startswith("-"):
            continue
        yield (*chain, name)
        child = parent[name]
        if child is not parent:
            yield from _commands(child, (*chain, name))


COMMANDS = list(_commands(app))


def _help(chain: tuple[str, ...]) -> str:
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown), contextlib.suppress(SystemExit):
        app.meta([*chain, "--help"])
    return shown.getvalue()


def test_every_command_is_listed() -> None:
    assert {("events",), ("jobs", "statement"), ("agent", "run"), ("up",)} <= set(COMMANDS)


@pytest.mark.parametrize("chain", COMMANDS, ids=" ".join)
def test_each_option_is_shown_once(chain: tuple[str, ...]) -> None:
    text = _help(chain)
    assert text.startswith("Usage: dante")
    # The options every command shares (`--nats-url`, `--user`) are the meta app's: a
    # command that declared its own as well showed it twice, with two different texts.
    assert text.count("--nats-url ") <= 1, text
    assert text.count("--user ") <= 1, text
