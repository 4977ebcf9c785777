"""Run Dante's benches: `python -m bench [--quick] [NAME ...]`.

Each bench prints a table (results with their baseline and ratio, measured in the same run)
and writes bench/results/<name>.json with the commit, the date and the machine's facts.
bench/README.md says what each one measures and what bounds it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bench.options import Options
from bench.report import RESULTS, Report

#: name -> module whose `run(options)` gives a Report; in the order `all` runs them.
BENCHES = {
    "raw": "bench.raw",
    "commands": "bench.commands",
    "flood": "bench.flood",
    "ingest": "bench.ingest",
    "scheduling": "bench.scheduling",
    "fleet": "bench.fleet",
    "memory": "bench.memory",
    "restart": "bench.restart",
    "agent": "bench.agent",
    "replay": "bench.replay_report",
    "logins": "bench.logins",
    "failover": "bench.failover",
}


async def _run(name: str, options: Options) -> Report:
    module = importlib.import_module(BENCHES[name])
    run: Callable[[Options], Awaitable[Report]] = module.run
    return await run(options)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(BENCHES)}")
    parser.add_argument("--quick", action="store_true", help="small fleets, short phases")
    parser.add_argument("--fleet", type=int, help="GPUs / agents / providers to simulate")
    parser.add_argument("--seconds", type=float, help="length of each measured phase")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    options = Options(quick=args.quick, fleet=args.fleet, seconds=args.seconds)
    names = args.names or list(BENCHES)
    unknown = [name for name in names if name not in BENCHES]
    if unknown:
        parser.error(f"no bench {', '.join(unknown)}; there are {', '.join(BENCHES)}")
    for name in names:
        print(f"-- {name} ...", file=sys.stderr, flush=True)
        report = asyncio.run(_run(name, options))
        print(report.table(), flush=True)
        print(f"   -> {report.write(args.out)}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
