"""The results in bench/results/ as Markdown tables, for bench/README.md.

.venv/bin/python -m bench.summary [NAME ...]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from bench.__main__ import BENCHES
from bench.report import RESULTS


def _value(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def table(name: str) -> str:
    doc = json.loads((RESULTS / f"{name}.json").read_text())
    params = ", ".join(f"{k} {v}" for k, v in doc["params"].items())
    dirty = " (uncommitted changes)" if doc["dirty"] else ""
    when = doc["date"][:16].replace("T", " ")
    head = f"**{name}** ({params}), commit `{doc['commit'][:10]}`{dirty}, {when} UTC"
    lines = [
        f"{head}, load {doc['machine']['load_avg'][0]}",
        "",
        "| metric | value | unit | ratio | vs |",
        "| --- | ---: | --- | ---: | --- |",
    ]
    for row in doc["results"]:
        ratio = f"{row['ratio']:.2f}" if "ratio" in row else ""
        vs = row.get("vs", "") + (f" ({row['note']})" if row.get("note") else "")
        lines.append(
            f"| {row['metric']} | {_value(row['value'])} | {row['unit']} | {ratio} | {vs} |"
        )
    lines.extend(f"\n{note}" for note in doc["notes"])
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    names = list(argv if argv is not None else sys.argv[1:]) or [
        name for name in BENCHES if (RESULTS / f"{name}.json").exists()
    ]
    print("\n\n".join(table(name) for name in names))


if __name__ == "__main__":
    main()
