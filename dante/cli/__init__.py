"""The `dante` command line."""

from dante.cli.app import main

__all__ = ["main"]
