"""`dante agent …`: the provider's side: what this machine offers, and the daemon serving it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from cyclopts import App, Parameter

from dante.schemas.values import Gpu

if TYPE_CHECKING:
    from dante.agent.config import AgentConfig
    from dante.agent.metrics import AgentMetrics

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
        (groups [COUNTx]MODEL:VRAM_GB, separated by commas).
    """
    import msgspec

    from dante.agent.gpus import detect_gpus, simulated_detection
    from dante.cli.logs import configure_logging

    # Stdout is for the answer (a JSON document may be parsed); diagnostics go to stderr,
    # at LOG_LEVEL like every other command's.
    configure_logging(stream=sys.stderr)

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


@app.command
async def run(
    *,
    name: str | None = None,
    wallet: str | None = None,
    price: str | None = None,
    executor: Literal["docker", "script"] | None = None,
    work_dir: Path | None = None,
    max_jobs: int | None = None,
    simulate: str | None = None,
    location: str | None = None,
    drain_timeout: float | None = None,
    tick_seconds: float | None = None,
    memory_limit_mb: int | None = None,
    cpu_limit: float | None = None,
    stop_grace: float | None = None,
    script_sandbox: Literal["auto", "require", "off"] | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> int:
    """Serve this machine's GPUs: register, take jobs, run them, report usage and results.

    Runs until SIGTERM or Ctrl-C, then stops taking jobs, lets running ones finish within
    --drain-timeout and gives the rest back to the platform. The provider account is
    DANTE_USERNAME (and DANTE_PASSWORD); settings may also come from the environment or a
    .env file in the working directory (the environment wins, options win over both).

    Parameters
    ----------
    name
        The machine's name on the marketplace [PROVIDER_NAME; default: the host name].
    wallet
        Solana address earnings are paid out to [SOLANA_WALLET_ADDRESS].
    price
        dGPU per GPU-hour for every GPU, e.g. 0.75 [default: the suggested price of each].
    executor
        Run jobs in Docker (image and script jobs) or as local scripts only
        [default: docker when a Docker engine answers].
    work_dir
        Where the agent keeps its provider id, journal and job folders
        [default: $DANTE_DATA_DIR/agent or ~/.local/share/dante/agent].
    max_jobs
        Run at most this many jobs at once [default: as many as the GPUs allow].
    simulate
        Offer simulated GPUs instead of detecting, e.g. '2xNVIDIA H100 80GB HBM3:80'
        (groups [COUNTx]MODEL:VRAM_GB, separated by commas).
    location
        Where the machine is, shown to renters (e.g. 'eu-west').
    drain_timeout
        On shutdown, seconds running jobs may take to finish before they are stopped and
        given back [default: 60].
    tick_seconds
        Seconds between usage reports of a running job [default: 10].
    memory_limit_mb
        Memory a job may use, in MB [default: for containers, a share of the machine's
        memory in proportion to the job's GPUs; scripts: none].
    cpu_limit
        CPU cores a container may use [default: a share in proportion to its GPUs].
    stop_grace
        Seconds between asking a job to stop (SIGTERM) and killing it [default: 10].
    script_sandbox
        Confine script jobs with Landlock to the system folders, /tmp and their own folder,
        away from the agent's credentials and data: auto (where the kernel can), require
        (refuse to start without it) or off [DANTE_SCRIPT_SANDBOX; default: auto].
    metrics_port
        Serve the agent's Prometheus metrics over HTTP on this port (`/metrics`; 0: any
        free one, said at start) [default: none].
    metrics_host
        The address the metrics listen on (0.0.0.0: every interface) [default: 127.0.0.1].
    """
    from dante.agent.config import AgentOptions, ConfigError, load_config
    from dante.cli.logs import configure_logging
    from dante.cli.metrics import check_port
    from dante.cli.options import shared
    from dante.client.connect import EXIT_USAGE

    options = AgentOptions(
        name=name,
        wallet=wallet,
        price=price,
        executor=executor,
        work_dir=work_dir,
        max_jobs=max_jobs,
        # --nats-url is the meta app's option, shared by every command.
        nats_url=shared().nats_url,
        simulate=simulate,
        location=location,
        drain_timeout=drain_timeout,
        tick_seconds=tick_seconds,
        memory_limit_mb=memory_limit_mb,
        cpu_limit=cpu_limit,
        stop_grace=stop_grace,
        script_sandbox=script_sandbox,
    )
    check_port(metrics_port)
    try:
        config = load_config(options)
    except ConfigError as exc:
        print(f"dante agent run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(level=config.log_level)
    gpus = _gpus_to_offer(config.simulate)
    if isinstance(gpus, int):
        return gpus
    if metrics_port is None:
        return await _serve(config, gpus)
    from dante.agent.metrics import AgentMetrics
    from dante.cli.metrics import MetricsUnavailable, say_unavailable, serving

    metrics = AgentMetrics(gpus=len(gpus))
    try:
        with serving(metrics.registry, metrics_host, metrics_port, "agent"):
            return await _serve(config, gpus, metrics)
    except MetricsUnavailable as exc:
        return say_unavailable(exc)


def _gpus_to_offer(simulate: str | None) -> tuple[Gpu, ...] | int:
    """The GPUs to serve, or the exit code after saying why there are none."""
    from dante.agent.gpus import detect_gpus, simulated_detection
    from dante.client.connect import EXIT_USAGE

    if simulate is not None:
        try:
            return simulated_detection(simulate).gpus
        except ValueError as exc:
            print(f"dante agent run: --simulate: {exc}", file=sys.stderr)
            return EXIT_USAGE
    detection = detect_gpus()
    if detection.gpus:
        return detection.gpus
    print("dante agent run: no GPU found. Tried:", file=sys.stderr)
    width = max(len(r.name) for r in detection.backends)
    for report in detection.backends:
        print(f"  {report.name:<{width}}  {report.reason}", file=sys.stderr)
    print(
        "To offer simulated GPUs instead: dante agent run --simulate 'COUNTxMODEL:VRAM_GB'",
        file=sys.stderr,
    )
    return 1


async def _serve(
    config: AgentConfig, gpus: tuple[Gpu, ...], metrics: AgentMetrics | None = None
) -> int:
    from dante.agent.daemon import AgentFailure, serve
    from dante.agent.identity import WorkDirError
    from dante.agent.journal import JournalError
    from dante.agent.setup import SetupError
    from dante.client.connect import ConnectFailed

    try:
        await serve(config, gpus, metrics=metrics)
    except (AgentFailure, SetupError, WorkDirError, JournalError) as exc:
        print(f"dante agent run: {exc}", file=sys.stderr)
        return 1
    except ConnectFailed as exc:
        print(f"dante agent run: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


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
