"""The settings in force, as the log records them (`SettingsChanged` on
`dante.evt.platform.settings`), and recording new ones.

A process started with settings (`dante up`, or `dante serve --config …`) records them when
they differ from those recorded last (none recorded: the defaults), before any of its
parts decides, so a replay or an audit knows the rules in force at every position of the
log. A process given none (`dante up`'s child `dante serve handlers views`, or another
`dante serve handlers`) runs with those in force. Two processes recording the same
settings at once append them once: the event id is derived from the version it follows
and the values, and the append is checked against that version.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import structlog

from dante.domain.settings import Settings
from dante.events.errors import ConcurrencyConflict
from dante.events.records import Append
from dante.events.streams import ensure_log
from dante.schemas import events as ev

if TYPE_CHECKING:
    from dante.events.store import EventStore
    from dante.events.streams import LogSettings

log = structlog.get_logger(__name__)

AGGREGATE: Final = "platform"
AGGREGATE_ID: Final = "settings"
_TRIES: Final = 5


async def settings_in_force(
    store: EventStore, base: Settings | None = None
) -> tuple[Settings, int]:
    """`base` (the defaults) with the rules recorded last (none recorded: `base`'s), and
    their event's sequence (0: none)."""
    base = base or Settings()
    recorded = await store.load(AGGREGATE, AGGREGATE_ID)
    for found in reversed(recorded):
        if isinstance(found.event, ev.SettingsChanged):
            return base.recorded(found.event), found.seq
    return base, 0


async def record_settings(
    store: EventStore, settings: Settings, source: str, log_settings: LogSettings | None = None
) -> int | None:
    """Append `SettingsChanged` when `settings` differ from those in force; its sequence,
    or None when they were in force already. With `log_settings`, the log is set up first."""
    if log_settings is not None:
        await ensure_log(store.jetstream, log_settings)
    for _ in range(_TRIES):
        current, version = await settings_in_force(store)
        changed = settings.differences(current)
        if not changed:
            return None
        digest = hashlib.sha256(repr(sorted(settings.as_fields().items())).encode()).hexdigest()
        event = ev.SettingsChanged(
            event_id=f"settings:{version}:{digest[:16]}",
            at=datetime.now(UTC),
            cause=f"seq:{version}" if version else "settings",
            changed=changed,
            source=source[:200],
            **settings.as_fields(),
        )
        try:
            appended = await store.append(Append(event=event, expected=version))
        except ConcurrencyConflict:
            continue  # another process recorded some at the same time: compare with those
        seq = appended.seqs[0] if appended.seqs else None
        log.info("settings.changed", changed={name: getattr(settings, name) for name in changed})
        return seq
    raise RuntimeError("the settings kept changing while this process recorded its own")
