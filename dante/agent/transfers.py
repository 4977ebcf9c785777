"""Job output and files, as the daemon needs them: behind a small interface, so its logic is
tested without the platform's file service and the wiring lives in one place."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from dante.agent.executors.spec import OutputLine
from dante.client import transfer
from dante.client.commands import Client
from dante.schemas import commands as cmd
from dante.schemas.values import FileRef


class Transfers(Protocol):
    """Output, results and inputs of this provider's job attempts.

    Methods raise `CommandError` when the platform refuses, `PlatformUnavailable` (or a
    NATS error) when it cannot be reached, `TransferError` when a file is not what it
    should be; the caller decides what to retry.
    """

    async def send_output(self, job_id: str, attempt: int, lines: Sequence[OutputLine]) -> None:
        """Record a batch of output lines of the attempt."""

    async def upload_results(self, job_id: str, attempt: int, archive: Path) -> FileRef:
        """Upload the attempt's packed results; the stored file."""

    async def fetch_input(self, job_id: str, ref: FileRef, dest: Path) -> None:
        """Download one input file of the job to `dest` (a checked path in its folder)."""


def wire_line(line: OutputLine) -> cmd.OutputLine:
    return cmd.OutputLine(at=line.at, stream=line.stream, text=line.text)


class CommandTransfers:
    """Transfers through the command service (`dante.client.transfer`)."""

    def __init__(self, client: Client, provider_id: str) -> None:
        self._client = client
        self._provider_id = provider_id

    async def send_output(self, job_id: str, attempt: int, lines: Sequence[OutputLine]) -> None:
        wire = [wire_line(line) for line in lines]
        await transfer.send_output(self._client, self._provider_id, job_id, attempt, wire)

    async def upload_results(self, job_id: str, attempt: int, archive: Path) -> FileRef:
        return await transfer.upload_results(
            self._client, self._provider_id, job_id, attempt, archive
        )

    async def fetch_input(self, job_id: str, ref: FileRef, dest: Path) -> None:
        await transfer.fetch_input(self._client, self._provider_id, job_id, ref, dest)
