"""A typed rejection: a stable code, a sentence a person understands, the field at fault."""

from __future__ import annotations

from typing import Final

from dante.schemas.commands import ErrorCode, ErrorInfo

#: The numeric code in the `Nats-Service-Error-Code` header, HTTP-like, for generic clients.
STATUS_OF: Final[dict[str, int]] = {
    "malformed": 400,
    "invalid": 400,
    "unknown_verb": 404,
    "forbidden": 403,
    "not_your_job": 403,
    "not_your_provider": 403,
    "unknown_provider": 404,
    "unknown_job": 404,
    "insufficient_funds": 402,
    "budget_reached": 402,
    "no_matching_offer": 409,
    "price_cap_too_low": 409,
    "job_finished": 409,
    "wrong_state": 409,
    "conflict": 409,
    "name_taken": 409,
    "unavailable": 503,
    "internal": 500,
    "rate_limited": 429,
    "quota_exceeded": 429,
}


class Rejected(Exception):
    """The command cannot be carried out; nothing was appended."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.info = ErrorInfo(code=code, message=message, field=field)

    @property
    def code(self) -> ErrorCode:
        return self.info.code

    @property
    def status(self) -> int:
        return STATUS_OF.get(self.info.code, 400)


def unknown_job(job_id: str, field: str = "job_id") -> Rejected:
    """The one answer for a job the caller may not see: one that does not exist and one of
    another account's read the same, so no answer tells whether a job id is in use."""
    return Rejected("unknown_job", f"you have no job {job_id}", field)
