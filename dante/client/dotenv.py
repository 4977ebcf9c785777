"""The `.env` file: settings in `KEY=VALUE` lines, read by every `dante` command.

The agent and the command line share this one reader. Variables already set in the
environment win over the file; options on the command line win over both. A missing file is
an empty one; a line that is not an assignment is an error that names the file and line.
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from pathlib import Path
from typing import Final

#: Where every command looks: the working directory.
DOTENV: Final = Path(".env")

_LINE: Final = re.compile(r"^\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=(?P<value>.*)$")


class DotenvError(ValueError):
    """A line of a `.env` file is not `KEY=VALUE`; the message names the file and line."""


def read_env_file(path: Path) -> dict[str, str]:
    """`KEY=VALUE` lines of a `.env` file; comments, blank lines and `export ` are allowed.

    Values may be quoted ('...' or "..."); an unquoted value ends at ` #`. A missing file is
    an empty one. Lines that are not assignments are refused, so a typo is not silently lost.
    """
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise DotenvError(f"{path}:{number}: expected KEY=VALUE, got {raw!r}")
        values[match["key"]] = _value(match["value"].strip())
    return values


def load_dotenv(
    path: Path = DOTENV, environ: MutableMapping[str, str] | None = None
) -> dict[str, str]:
    """Put the file's settings into the environment where it does not set them already;
    return those that were added."""
    target = os.environ if environ is None else environ
    added = {key: value for key, value in read_env_file(path).items() if key not in target}
    target.update(added)
    return added


def _value(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    comment = value.find(" #")
    return value[:comment].rstrip() if comment >= 0 else value
