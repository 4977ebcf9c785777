"""JSON Schema export: one file per event and command, the contract other languages can use."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import msgspec

from dante.schemas.commands import ALL_COMMANDS, Command
from dante.schemas.events import ALL_EVENTS, Event
from dante.schemas.identity import REPLY_HEADER, REPLY_PREFIX


def normalised(node: Any) -> Any:
    """`node` with every description as `inspect.cleandoc` leaves it.

    msgspec takes a struct's description from its docstring, and versions differ in how they
    clean it (0.23 strips the indentation, earlier ones kept it). The committed files must
    not depend on which msgspec made them, so the export cleans every description itself.
    """
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else normalised(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [normalised(item) for item in node]
    return node


def _schema_of(cls: type[Event | Command[Any]]) -> dict[str, Any]:
    _, raw = msgspec.json.schema_components([cls], ref_template="#/$defs/{name}")
    components: dict[str, Any] = normalised(raw)
    own = components.pop(cls.__name__)
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://dante.dev/schemas/{_folder(cls)}/{cls.__name__}.json",
        **own,
        "title": cls.__name__,
    }
    if issubclass(cls, Command):
        schema["x-dante-subject"] = f"dante.cmd.{cls.ROLE}.<identity>.{cls.VERB}"
        # The answer: to the token sent in the request's `Dante-Reply` header, never to
        # its reply subject (dante/services/replies.py).
        schema["x-dante-reply"] = f"{REPLY_PREFIX}.<identity>.<{REPLY_HEADER} header>"
    else:
        schema["x-dante-subject"] = f"dante.evt.{cls.AGGREGATE}.<id>"
    if components:
        schema["$defs"] = dict(sorted(components.items()))
    return schema


def _folder(cls: type[Event | Command[Any]]) -> str:
    return "events" if issubclass(cls, Event) else "commands"


def render_all() -> dict[str, str]:
    """Every schema file's relative path and exact text."""
    files: dict[str, str] = {}
    classes: list[type[Event | Command[Any]]] = [*ALL_EVENTS, *ALL_COMMANDS]
    for cls in classes:
        text = json.dumps(_schema_of(cls), indent=2, sort_keys=False, ensure_ascii=False) + "\n"
        files[f"{_folder(cls)}/{cls.__name__}.json"] = text
    return files


def export(out: Path) -> list[Path]:
    """Write every schema under `out`, removing stale files of ours; return what was written."""
    files = render_all()
    written: list[Path] = []
    for folder in ("events", "commands"):
        target = out / folder
        target.mkdir(parents=True, exist_ok=True)
        for stale in target.glob("*.json"):
            if f"{folder}/{stale.name}" not in files:
                stale.unlink()
    for rel, text in files.items():
        path = out / rel
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written
