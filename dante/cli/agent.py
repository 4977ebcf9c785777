"""`dante agent …`: the provider's side: what this machine offers and, later, the daemon."""

from __future__ import annotations

import json
import sys
from typing import Annotated

from cyclopts import App, Parameter

from dante.schemas.values import Gpu

app = App(name="agent", help="Run GPUs for the marketplace: inspect them, serve jobs.")


@app.command
def gpus(
    *,
    json_output: Annotated[bool, Parameter(name="--json", negative=())] = False,
    simulate: str | None = None,
) -> int:
    """Show the GPUs this machine would offer, and which vendor tool found them.

    Exits 1 when no GPU is found, after saying why each vendor's tool found none.

    Parameters
    ----------
    json_output
        Print one JSON document: {"gpus": [...], "backends": [...]}.
    simulate
        Offer simulated GPUs instead of detecting, e.g. '2xNVIDIA H100 80GB HBM3:80'
        (groups COUNTxMODEL:VRAM_GB, separated by commas).
    """
    import msgspec
    import structlog

    from dante.agent.gpus import detect_gpus, simulated_detection

    # Stdout is for the answer (a JSON document may be parsed); diagnostics go to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

    if simulate is not None:
        try:
            detection = simulated_detection(simulate)
        except ValueError as exc:
            print(f"dante agent gpus: --simulate: {exc}", file=sys.stderr)
            return 2
    else:
        detection = detect_gpus()

    if json_output:
        document = {
            "gpus": [msgspec.to_builtins(gpu) for gpu in detection.gpus],
            "backends": [
                {"name": r.name, "found": r.found, "reason": r.reason} for r in detection.backends
            ],
        }
        print(json.dumps(document, indent=2))
    elif detection.gpus:
        _print_table(detection.gpus)
    else:
        print("No GPU found. Tried:")
        width = max(len(r.name) for r in detection.backends)
        for report in detection.backends:
            print(f"  {report.name:<{width}}  {report.reason}")
        print("To offer simulated GPUs instead: dante agent gpus --simulate 'COUNTxMODEL:VRAM_GB'")
    return 0 if detection.gpus else 1


def _print_table(gpus: tuple[Gpu, ...]) -> None:
    rows = [("INDEX", "VENDOR", "MODEL", "VRAM", "UUID", "")]
    rows.extend(
        (
            str(gpu.index),
            gpu.vendor,
            gpu.model,
            f"{gpu.vram_gb} GB",
            gpu.uuid,
            "simulated" if gpu.simulated else "",
        )
        for gpu in gpus
    )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
