"""The platform's settings on the command line of `dante up` and `dante serve`: a TOML file
(`--config`) and an option for each of the common ones, options over the file over the
defaults (`dante.domain.settings`). A value that is not one is a usage error (exit 2),
before anything starts."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from cyclopts import Parameter

from dante.cli.options import UsageError
from dante.domain.settings import Settings, SettingsError


@Parameter(name="*")
@dataclass
class Tuning:
    """The settings a platform process was given (None: not given)."""

    config: Annotated[
        Path | None,
        Parameter(
            help="A TOML file of platform settings, one `name = value` a line (fee_bps, "
            "hold_window_s, grace_s, stop_grace_s, max_attempts, start_timeout_s, "
            "offline_after_s, min_withdrawal in µdGPU, usage_slack_ms); the options below "
            "win over it."
        ),
    ] = None
    fee_bps: Annotated[
        int | None,
        Parameter(help="The platform's fee in basis points of each charge [default: 500, 5 %]."),
    ] = None
    hold_window_s: Annotated[
        int | None,
        Parameter(help="Seconds of use held ahead for jobs without a maximum [default: 600]."),
    ] = None
    grace_s: Annotated[
        int | None,
        Parameter(
            help="Seconds a job whose funds cannot be held keeps running before it is stopped "
            "[default: 300]."
        ),
    ] = None
    offline_after_s: Annotated[
        int | None,
        Parameter(help="Seconds of silence after which a provider is offline [default: 30]."),
    ] = None
    max_attempts: Annotated[
        int | None,
        Parameter(help="Placements of a job before it fails [default: 3]."),
    ] = None
    start_timeout_s: Annotated[
        int | None,
        Parameter(help="Seconds an assigned job may take to start [default: 120]."),
    ] = None

    def given(self) -> bool:
        return self.config is not None or bool(self._options())

    def _options(self) -> dict[str, int]:
        values = {
            "fee_bps": self.fee_bps,
            "hold_window_s": self.hold_window_s,
            "grace_s": self.grace_s,
            "offline_after_s": self.offline_after_s,
            "max_attempts": self.max_attempts,
            "start_timeout_s": self.start_timeout_s,
        }
        return {name: value for name, value in values.items() if value is not None}

    def settings(self, base: Settings | None = None) -> Settings:
        """The effective settings (`base`, by default the defaults, tuned by the file and the
        options); `UsageError` saying what is wrong with the file or a value."""
        settings = base or Settings()
        try:
            if self.config is not None:
                settings = settings.tuned(read_config(self.config), str(self.config))
            options = self._options()
            where = ", ".join(f"--{name.replace('_', '-')}" for name in options)
            return settings.tuned(options, where)
        except SettingsError as exc:
            raise UsageError(str(exc)) from None

    def source(self, command: str) -> str:
        """Where the settings came from, for the log: the command, file and options."""
        said = [command]
        if self.config is not None:
            said.append(f"--config {self.config}")
        said += [f"--{name.replace('_', '-')} {value}" for name, value in self._options().items()]
        return " ".join(said)


def read_config(path: Path) -> dict[str, object]:
    """The settings of a TOML file; `UsageError` when it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--config {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--config {path}: not a UTF-8 text file") from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path}: not valid TOML ({exc})") from None
    return values
