"""Keypairs in the Solana CLI's format: a JSON array of the 64 secret key bytes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from solders.keypair import Keypair


class KeypairError(Exception):
    pass


def default_keypair_path() -> Path:
    """`$SOLANA_KEYPAIR`, else the Solana CLI's default `~/.config/solana/id.json`."""
    env = os.environ.get("SOLANA_KEYPAIR")
    return Path(env) if env else Path.home() / ".config" / "solana" / "id.json"


def read_keypair(path: Path) -> Keypair:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeypairError(f"no keypair at {path}") from None
    except (OSError, ValueError) as exc:
        raise KeypairError(f"{path} is not a Solana keypair file: {exc}") from None
    if not (
        isinstance(raw, list)
        and len(raw) == 64
        and all(isinstance(b, int) and 0 <= b < 256 for b in raw)
    ):
        raise KeypairError(f"{path} is not a Solana keypair file (64 numbers 0-255 expected)")
    try:
        return Keypair.from_bytes(bytes(raw))
    except Exception as exc:
        raise KeypairError(f"{path} holds no valid keypair: {exc}") from None


def write_keypair(path: Path, keypair: Keypair) -> None:
    """Write it readable by its owner only (0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(list(bytes(keypair)), f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def load_or_create(path: Path) -> Keypair:
    if path.exists():
        return read_keypair(path)
    keypair = Keypair()
    write_keypair(path, keypair)
    return keypair
