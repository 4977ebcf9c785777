"""Logging for every long-running command: pretty in a terminal, JSON lines otherwise.

LOG_LEVEL (debug, info, warning, error) sets the level; info by default.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure_logging(*, level: str | None = None, stream: object = None) -> None:
    name = (level or os.environ.get("LOG_LEVEL") or "info").upper()
    numeric = logging.getLevelNamesMapping().get(name, logging.INFO)
    out = stream or sys.stderr
    pretty = hasattr(out, "isatty") and out.isatty()
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=True)
        if pretty
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
