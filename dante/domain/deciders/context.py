"""What every decider gets besides the world and the command (it returns a `Decision`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dante.domain.settings import Settings
from dante.schemas.chain import TokenTransfer


@dataclass(frozen=True, slots=True)
class VerifiedPayment:
    """What the service read from the chain for a deposit, before deciding: the transfer
    (None when the chain has no confirmed token transfer under that signature) and where
    the platform's money must go."""

    signature: str
    transfer: TokenTransfer | None
    mint: str
    treasury_account: str
    cluster: str = "local"


@dataclass(frozen=True, slots=True)
class Context:
    """Who is acting, when, and under which rules."""

    role: str
    identity: str
    command_id: str
    now: datetime
    settings: Settings = field(default_factory=Settings)
    #: For a deposit: the chain's answer, looked up by the service (deciders do no IO).
    payment: VerifiedPayment | None = None

    @property
    def cause(self) -> str:
        return f"cmd:{self.role}:{self.identity}:{self.command_id}"

    def event_id(self, n: int = 0) -> str:
        """The id (and message id) of the command's n-th event: retries reproduce it."""
        return f"{self.cause}:{n}"

    def derived_id(self, prefix: str) -> str:
        """A stable id for something the command creates (a job, a withdrawal)."""
        digest = hashlib.sha256(self.cause.encode()).hexdigest()[:16]
        return f"{prefix}-{digest}"

    def envelope(self, n: int = 0) -> dict[str, Any]:
        return {"event_id": self.event_id(n), "at": self.now, "cause": self.cause}
