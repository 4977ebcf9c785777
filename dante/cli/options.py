"""The options every command shares, as the meta app parsed them, and the exit codes
and option types the commands have in common."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Final

from cyclopts import Parameter

from dante.client.connect import resolve_url

#: `dante jobs wait` ran out of time before the job ended.
EXIT_TIMEOUT: Final = 4
#: Ctrl-C, as a shell reports death by SIGINT.
EXIT_INTERRUPTED: Final = 130

URL_ENV: Final = "DANTE_NATS_URL"
#: Who asks public questions (offers, quotes) on a platform without logins, when no account
#: is given.
GUEST: Final = "guest"

#: `--json` on every command that shows something.
Json = Annotated[
    bool,
    Parameter(
        name="--json",
        negative=(),
        help="Print one JSON document instead of text; amounts are integer µdGPU in keys "
        "ending in _udgpu.",
    ),
]


class UsageError(Exception):
    """The command line asks for something malformed; nothing was sent (exit code 2)."""


@dataclass(frozen=True, slots=True)
class Shared:
    """The options of the meta app, as given on the command line (None when absent)."""

    nats_url: str | None = None
    user: str | None = None


_shared = Shared()


def set_shared(shared: Shared) -> None:
    """Record the meta app's options; export the URL so child processes see it too."""
    global _shared  # noqa: PLW0603 (parsed once per process, by the meta app)
    _shared = shared
    if shared.nats_url:
        os.environ[URL_ENV] = shared.nats_url


def shared() -> Shared:
    return _shared


def nats_url() -> str:
    """--nats-url, else DANTE_NATS_URL, else NATS_ADDRESS, else the local default."""
    return resolve_url(_shared.nats_url)
