"""Help on every level, and usage errors: one line (or one JSON document), exit code 2."""

from __future__ import annotations

import pytest

from tests.cli.cli import run_dante

NOWHERE = "nats://127.0.0.1:1"

COMMANDS = [
    ["market"],
    ["estimate"],
    ["jobs"],
    ["jobs", "submit"],
    ["jobs", "list"],
    ["jobs", "status"],
    ["jobs", "wait"],
    ["jobs", "logs"],
    ["jobs", "cancel"],
    ["jobs", "results"],
    ["wallet"],
    ["wallet", "deposit"],
    ["wallet", "balance"],
    ["wallet", "history"],
    ["wallet", "withdraw"],
    ["price", "suggest"],
    ["status"],
    ["providers"],
    ["balance"],
    ["submit"],
]


def test_the_root_help_groups_the_commands() -> None:
    ran = run_dante("--help", url=NOWHERE)
    assert ran.code == 0, ran
    for group in ("Rent GPUs", "Provide GPUs", "Run the platform", "Your account", "Shortcuts"):
        assert group in ran.out
    for line in ("market ", "jobs ", "wallet ", "agent ", "--nats-url", "--user"):
        assert line in ran.out
    # Without a terminal, `dante` alone shows the same help rather than a menu.
    alone = run_dante(url=NOWHERE)
    assert alone.code == 0 and alone.out == ran.out


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str]) -> None:
    ran = run_dante(*command, "--help", url=NOWHERE)
    assert ran.code == 0, ran
    usage, _, description = ran.out.partition("\n\n")
    assert usage.startswith(f"Usage: dante {' '.join(command)}")
    assert description.strip(), ran.out
    assert "--nats-url" in ran.out  # the shared options are listed with every command


def test_usage_errors_are_one_line_or_one_json_document() -> None:
    ran = run_dante("nope", url=NOWHERE)
    assert ran.code == 2
    assert ran.err.startswith('error: Unknown command "nope"')
    assert ran.err.endswith("; see `dante --help`\n") and ran.err.count("\n") == 1

    ran = run_dante("jobs", "list", "--limit", "many", url=NOWHERE, user="alice")
    assert ran.code == 2
    assert ran.err.startswith("error: Invalid value for --limit")
    assert ran.err.endswith("; see `dante jobs list --help`\n")

    ran = run_dante("wallet", "history", "--json", "--colour", url=NOWHERE, user="alice")
    assert (ran.code, ran.err) == (2, ""), ran
    assert ran.json() == {
        "ok": False,
        "error": {
            "code": "usage",
            "message": "Unknown option: --colour",
            "hint": "see `dante wallet history --help`",
        },
    }
    # After `--` it is the job's command, not ours: refused for the missing payload instead.
    ran = run_dante("jobs", "submit", "--", "--json", url=NOWHERE, user="alice")
    assert ran.code == 2 and ran.out == "" and "either --script FILE or --image" in ran.err
