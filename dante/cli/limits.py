"""The per-account limits an operator sets on `dante up` and `dante serve` (README, "Limits
per account"): the admission's rates, the machine limit, the storage quota."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Final

from cyclopts import Parameter

from dante.cli.options import UsageError
from dante.domain.settings import Settings

_DEFAULT: Final = Settings()


@Parameter(name="*", group="Limits per account")
@dataclass(frozen=True, slots=True)
class Limits:
    rate_limit: Annotated[
        float,
        Parameter(
            help="Requests (commands and queries) one account may send a second, sustained; "
            "more are refused `rate_limited` with a retry-after."
        ),
    ] = _DEFAULT.request_rate
    rate_burst: Annotated[
        int, Parameter(help="How many requests an account may send at once above its rate.")
    ] = _DEFAULT.request_burst
    write_limit: Annotated[
        float,
        Parameter(
            help="Commands that append to the log (deposits, submissions, reports) one "
            "account may send a second, sustained."
        ),
    ] = _DEFAULT.write_rate
    write_burst: Annotated[
        int, Parameter(help="How many log-writing commands an account may send at once.")
    ] = _DEFAULT.write_burst
    max_machines: Annotated[
        int, Parameter(help="Machines one provider account may have registered at once.")
    ] = _DEFAULT.max_machines
    input_quota: Annotated[
        int, Parameter(help="Bytes one renter's stored inputs may take in all.")
    ] = _DEFAULT.input_quota_bytes
    input_ttl: Annotated[
        int,
        Parameter(
            help="Seconds after its upload an input that no waiting or running job names "
            "is deleted."
        ),
    ] = _DEFAULT.input_ttl_s

    def settings(self) -> Settings:
        """The platform's settings with these limits, checked."""
        for name, value in (("--rate-limit", self.rate_limit), ("--write-limit", self.write_limit)):
            if value <= 0:
                raise UsageError(f"{name} must be above 0, not {value}")
        for name, count in (
            ("--rate-burst", self.rate_burst),
            ("--write-burst", self.write_burst),
            ("--max-machines", self.max_machines),
            ("--input-quota", self.input_quota),
            ("--input-ttl", self.input_ttl),
        ):
            if count < 1:
                raise UsageError(f"{name} must be at least 1, not {count}")
        return dataclasses.replace(
            _DEFAULT,
            request_rate=self.rate_limit,
            request_burst=self.rate_burst,
            write_rate=self.write_limit,
            write_burst=self.write_burst,
            max_machines=self.max_machines,
            input_quota_bytes=self.input_quota,
            input_ttl_s=self.input_ttl,
        )

    def argv(self) -> list[str]:
        """These limits as options, for a child `dante serve` (only those not the default)."""
        args: list[str] = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value != field.default:
                args += [f"--{field.name.replace('_', '-')}", str(value)]
        return args
