"""`dante schemas …`: the wire contracts as JSON Schema."""

from __future__ import annotations

from pathlib import Path

from cyclopts import App

app = App(name="schemas", help="Export the JSON Schema of every event and command.")


@app.command
def export(*, out: Path = Path("schemas")) -> None:
    """Write one JSON Schema file per event and command under OUT (events/, commands/).

    Parameters
    ----------
    out
        Folder to write into; created if missing. Stale files of ours are removed.
    """
    from dante.schemas.export import export as write_all

    written = write_all(out)
    print(f"wrote {len(written)} schema files under {out}")
