"""The cyclopts application: the root `dante` command and its lazily imported sub-commands.

A meta app parses the options every command shares (`--nats-url`, `--user`) wherever they
appear, then runs the command through `failures.guard`, which maps the failures a person can
act on to one line and an exit code. Commands are registered by import path, so `dante --help`
and each command import only what they use.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, NoReturn

from cyclopts import App, Group, Parameter

from dante import __version__

if TYPE_CHECKING:
    from cyclopts.exceptions import CycloptsError

RENT = Group("Rent GPUs", sort_key=1)
PROVIDE = Group("Provide GPUs", sort_key=2)
OPERATE = Group("Run the platform", sort_key=3)
ACCOUNT = Group("Your account", sort_key=4)
SHORTCUTS = Group("Shortcuts", sort_key=5)
SESSION = Group("Who and where (any command)", sort_key=6)


def _one_line(error: CycloptsError) -> NoReturn:
    """Usage errors as one plain line with where to look (or, with --json, one JSON document),
    like every other failure; then exit 2, as cyclopts would."""
    from dante.cli.failures import Failure, report
    from dante.client.connect import EXIT_USAGE

    command = " ".join(["dante", *(error.command_chain or ())]).strip()
    message = " ".join(str(error).split()).rstrip(".,; ")
    tokens = list(error.root_input_tokens or ())
    options = tokens[: tokens.index("--")] if "--" in tokens else tokens
    # Written and ended here rather than through cyclopts' console, which would wrap the line
    # to the terminal and add an empty one.
    failure = Failure("usage", message, EXIT_USAGE, hint=f"see `{command} --help`")
    sys.exit(report(failure, json="--json" in options))


app = App(
    name="dante",
    help="Dante: rent GPUs, or rent yours out, on an auditable event log.\n\n"
    "Run `dante` with no arguments in a terminal for an interactive menu.",
    version=__version__,
    error_formatter=_one_line,
)
app.meta.error_formatter = _one_line

# (module:attribute, name, group, help): help is given here so `dante --help` imports nothing.
_COMMANDS = [
    ("dante.cli.market:market", "market", RENT, "List the GPUs on offer, filtered and sorted."),
    ("dante.cli.price:estimate", "estimate", RENT, "Quote a job from the current offers."),
    ("dante.cli.jobs:app", "jobs", RENT, "Submit jobs, follow them, read logs, get results."),
    ("dante.cli.wallet:app", "wallet", RENT, "Deposit, check your balance, read the history."),
    ("dante.cli.chain:app", "chain", RENT, "The chain dGPU lives on: status, balance, faucet."),
    ("dante.cli.agent:app", "agent", PROVIDE, "Run the agent that rents out this machine."),
    ("dante.cli.price:app", "price", PROVIDE, "Suggest a price per GPU-hour for a GPU."),
    ("dante.cli.up:up", "up", OPERATE, "Start the platform (--demo: with a provider)."),
    ("dante.cli.serve:serve", "serve", OPERATE, "Run parts of the platform in this process."),
    ("dante.cli.cluster:app", "cluster", OPERATE, "Write a nats-server cluster's configuration."),
    ("dante.cli.status:status", "status", OPERATE, "Is the platform up; or a job's status."),
    ("dante.cli.schemas:app", "schemas", OPERATE, "Export the JSON Schema of every message."),
    ("dante.cli.events:events", "events", OPERATE, "Browse the event log, or follow it."),
    ("dante.cli.replay:replay", "replay", OPERATE, "Rebuild the views as of any moment."),
    ("dante.cli.audit:audit", "audit", OPERATE, "Check every invariant over the whole log."),
    ("dante.cli.account:app", "account", ACCOUNT, "Open an account."),
    ("dante.cli.account:login", "login", ACCOUNT, "Log in and keep a login token here."),
    ("dante.cli.account:logout", "logout", ACCOUNT, "Log out: revoke and forget the token."),
    ("dante.cli.market:market", "providers", SHORTCUTS, "= dante market"),
    ("dante.cli.wallet:balance", "balance", SHORTCUTS, "= dante wallet balance"),
    ("dante.cli.shortcuts:submit", "submit", SHORTCUTS, "Submit a job with defaults."),
]
for path, name, group, text in _COMMANDS:
    app.command(path, name=name, group=group, help=text)


@app.meta.default
def launcher(
    *tokens: Annotated[str, Parameter(show=False, allow_leading_hyphen=True)],
    nats_url: Annotated[
        str | None,
        Parameter(
            group=SESSION,
            help="The platform's NATS server (comma-separated for a cluster). "
            "Default: $DANTE_NATS_URL, else $NATS_ADDRESS, else nats://127.0.0.1:4222.",
        ),
    ] = None,
    user: Annotated[
        str | None,
        Parameter(
            group=SESSION,
            help="The account you act as (with $DANTE_PASSWORD, or its stored login). "
            "Default: $DANTE_USERNAME, else your `dante login`.",
        ),
    ] = None,
) -> int:
    import sys

    from dante.cli.failures import guard
    from dante.cli.options import Shared, set_shared

    set_shared(Shared(nats_url=nats_url, user=user))
    if not tokens and sys.stdin.isatty() and sys.stdout.isatty():
        from dante.cli.menu import menu

        return menu()
    command, bound, _ = app.parse_args(tokens)
    json = bool(bound.arguments.get("json_output") or bound.arguments.get("json"))
    return guard(lambda: command(*bound.args, **bound.kwargs), json=json)


def main() -> None:
    read_dotenv()
    use_event_loop()
    try:
        app.meta()
    except BaseException as exc:
        if not _broken_pipe(exc):
            raise
        quiet_broken_pipe()


def read_dotenv() -> None:
    """Settings from `.env` in the working directory, for every command (the environment
    wins); a line that is not `KEY=VALUE` stops the command with exit 2."""
    from dante.client.dotenv import DotenvError, load_dotenv

    try:
        load_dotenv()
    except (DotenvError, OSError, UnicodeDecodeError) as exc:
        print(f"dante: {exc}", file=sys.stderr)
        sys.exit(2)


def _broken_pipe(exc: BaseException) -> bool:
    """The reader of our output went away (`dante jobs logs J | head`), maybe inside a group."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_broken_pipe(inner) for inner in exc.exceptions)
    return isinstance(exc, BrokenPipeError)


def quiet_broken_pipe() -> NoReturn:
    """End like a Unix tool whose reader left: no traceback, and the exit status of SIGPIPE.

    Python ignores SIGPIPE (so sockets raise instead of killing the process) and turns it into
    BrokenPipeError; stdout is pointed at /dev/null so that flushing it at exit cannot raise
    again.
    """
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(141)


def use_event_loop() -> None:
    """uvloop when it is installed, unless DANTE_EVENT_LOOP=asyncio (see pyproject.toml)."""
    import os

    if os.environ.get("DANTE_EVENT_LOOP", "uvloop") != "uvloop":
        return
    try:
        import uvloop
    except ImportError:
        return
    import asyncio

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
