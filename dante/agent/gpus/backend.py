"""What every GPU detection backend offers, and how it says it found nothing."""

from __future__ import annotations

from typing import Protocol

from dante.schemas.values import Gpu


class BackendUnavailable(Exception):
    """A backend cannot report GPUs here; the message says why, in words a provider can act on."""


class Backend(Protocol):
    """One vendor's way of finding GPUs (a library or a command line tool)."""

    #: Short vendor name shown to the provider: "nvidia", "amd", "apple", "intel".
    name: str

    def detect(self) -> list[Gpu]:
        """Return the GPUs found, indexed as the vendor's runtime numbers them.

        Raises `BackendUnavailable` when the library or tool is missing or fails; an empty
        list means it ran and saw no device.
        """
        ...
