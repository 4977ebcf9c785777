"""The README's shell examples can be pasted into a shell as they are."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import msgspec
import pytest

from dante.schemas.values import SolanaAddress

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
#: Fenced blocks with no language: the README's shell examples.
BLOCKS = re.findall(r"^```\n(.*?)^```$", README, re.MULTILINE | re.DOTALL)


def test_the_readme_has_shell_examples() -> None:
    assert len(BLOCKS) >= 10
    assert any("dante jobs submit" in block for block in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.splitlines()[0][:40])
def test_every_shell_example_parses(block: str) -> None:
    # A placeholder like `<your address>` reads as a redirection and breaks the pasted line.
    checked = subprocess.run(
        ["bash", "-n"], input=block, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.splitlines()[0][:40])
def test_no_example_holds_a_placeholder_to_fill_in(block: str) -> None:
    # `--wallet <your address>` even parses, and then fails: a redirection from "your".
    assert not re.findall(r"<[A-Za-z][\w .-]*>", block)


def test_a_second_terminal_gets_dante_on_its_path_before_using_it() -> None:
    tour = README[README.index("## A short tour") :]
    first_bare = re.search(r"^dante ", tour, re.MULTILINE)
    assert first_bare is not None
    assert "source .venv/bin/activate" in tour[: first_bare.start()]


def test_sample_payout_addresses_are_solana_addresses() -> None:
    given = re.findall(r"(?:--wallet |SOLANA_WALLET_ADDRESS=)(\S+)", README)
    assert given
    for address in given:
        msgspec.convert(shlex.split(address)[0], SolanaAddress)
