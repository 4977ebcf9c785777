"""Running `dante` as a real process, with its output and exit code at hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def clean_env(**extra: str | None) -> dict[str, str]:
    """This process's environment without any Dante or NATS setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DANTE_", "NATS_"))}
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def run_dante(
    *args: str,
    url: str | None,
    user: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> Ran:
    done = subprocess.run(
        [sys.executable, "-m", "dante", *args],
        capture_output=True,
        text=True,
        env={**clean_env(DANTE_NATS_URL=url, DANTE_USERNAME=user), **(env or {})},
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return Ran(done.returncode, done.stdout, done.stderr)
