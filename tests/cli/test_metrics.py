"""`dante up --metrics-port`: the real platform (its handlers and views in their child
process), a real agent running a job, and its Prometheus metrics scraped over HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cli.cli import Ran, run_dante
from tests.cli.platform_proc import UpProcess, dante, free_port

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[UpProcess]:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "LOG_LEVEL": "warning"}
    port = free_port()
    up = UpProcess(tmp_path / "data", None, "--demo", "--metrics-port", str(port), env=env).start(
        timeout=120
    )
    up.metrics = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
    try:
        yield up
    finally:
        up.stop()


def renter(up: UpProcess, *args: str) -> Ran:
    env = {"XDG_CONFIG_HOME": up.env["XDG_CONFIG_HOME"], "DANTE_PASSWORD": "demo-pass"}
    return run_dante(*args, url=up.url, user="demo-user", env=env, timeout=120)


def test_the_platform_counts_commands_jobs_gpus_and_money(
    platform: UpProcess, tmp_path: Path
) -> None:
    url: str = platform.metrics  # type: ignore[attr-defined]
    assert f"platform metrics: {url}" in "".join(platform.output)

    (tmp_path / "job.py").write_text("import time\ntime.sleep(2)\nprint('done')\n")
    ran = renter(
        platform, "jobs", "submit", "--json", "--script", str(tmp_path / "job.py"),
        "--gpus", "1", "--max-hours", "0.1",
    )  # fmt: skip
    assert ran.code == 0, ran
    job_id = ran.json()["job_id"]
    assert renter(platform, "jobs", "wait", job_id, "--timeout", "90").code == 0
    refused = renter(platform, "jobs", "status", "job-that-is-not-there")
    assert refused.code == 1
    statement = renter(platform, "jobs", "statement", job_id, "--json").json()
    assert statement["charged_udgpu"] > 0

    # The views (in the child process) follow the log: wait until they show the job ended.
    deadline = time.monotonic() + 30
    while True:
        samples = scrape(url)
        if value(samples, "dante_jobs", state="completed") == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert value(samples, "dante_jobs", state="completed") == 1
    assert value(samples, "dante_jobs", state="running") == 0
    assert value(samples, "dante_commands_total", role="renter", verb="submit", outcome="ok") == 1
    assert (
        value(samples, "dante_commands_total", role="renter", verb="job", outcome="unknown_job")
        == 1
    )
    assert value(samples, "dante_command_seconds_count", role="renter", verb="submit") == 1
    # Money is integer µdGPU: what the metric says is what the renter's statement says.
    assert value(samples, "dante_charged_udgpu_total") == statement["charged_udgpu"]
    assert value(samples, "dante_fees_udgpu_total") == statement["fee_udgpu"]
    assert value(samples, "dante_agents_online") == 1
    assert value(samples, "dante_gpus", state="free") == 2
    assert value(samples, "dante_gpus", state="busy") == 0
    last = value(samples, "dante_log_last_sequence")
    assert last is not None and last > 10
    appends = value(samples, "dante_append_seconds_count")
    assert appends is not None and appends > 0
    # Every handler is reported, from its consumer (the handlers run in the child), and
    # none is far behind a quiet log.
    for handler in ("scheduler", "billing", "dispatcher", "liveness"):
        lag = value(samples, "dante_handler_lag_events", handler=handler)
        assert lag is not None and lag <= 5, (handler, lag)


def test_a_taken_metrics_port_is_an_error_naming_it(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        up = UpProcess(tmp_path / "data", None, "--metrics-port", str(port))
        with pytest.raises(AssertionError, match=f"127.0.0.1:{port}"):
            up.start()
    assert up.process is not None and up.process.returncode == 1


def test_a_metrics_port_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    result = dante("up", "--data-dir", str(tmp_path), "--metrics-port", "70000")
    assert result.returncode == 2
    assert "--metrics-port is a port number from 0 to 65535, not 70000" in result.stderr
    assert not (tmp_path / "secrets.json").exists()


BOB = {"DANTE_USERNAME": "bob", "DANTE_PASSWORD": "bob-secret-1"}
CAROL = {"DANTE_USERNAME": "carol", "DANTE_PASSWORD": "carol-secret-1"}
PAYOUT = "7EcDhSYGxXyscszYEp35KHN8vvw3svAuLKTzXwCFLtV"


def test_the_agent_counts_its_jobs_usage_and_heartbeats(tmp_path: Path) -> None:
    env = {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "LOG_LEVEL": "warning",
        # Carol's wallet keypair (made by the faucet), never the user's own.
        "SOLANA_KEYPAIR": str(tmp_path / "carol.json"),
    }
    up = UpProcess(tmp_path / "data", None, "--processes", "1", env=env).start()
    agent: subprocess.Popen[str] | None = None
    try:
        assert up.dante("account", "create", "--role", "provider", **BOB).returncode == 0
        assert up.dante("account", "create", "--role", "renter", **CAROL).returncode == 0
        assert up.dante("chain", "faucet", "10", **CAROL).returncode == 0
        assert up.dante("wallet", "deposit", "10", **CAROL).returncode == 0
        port = free_port()
        agent = subprocess.Popen(
            [
                sys.executable, "-m", "dante", "agent", "run",
                "--simulate", "1xNVIDIA GeForce RTX 4090:24", "--executor", "script",
                "--wallet", PAYOUT, "--work-dir", str(tmp_path / "agent"),
                "--tick-seconds", "1", "--metrics-port", str(port),
            ],
            env={**up.env, **BOB, "DANTE_NATS_URL": up.url},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            market = up.dante("market", "--json", **CAROL)
            if market.returncode == 0 and json.loads(market.stdout)["offers"]:
                break
            time.sleep(0.5)
        samples = scrape(url)
        assert value(samples, "dante_agent_gpus") == 1
        assert value(samples, "dante_agent_connected") == 1

        (tmp_path / "job.py").write_text("import time\ntime.sleep(3)\n")
        submitted = up.dante(
            "jobs", "submit", "--json", "--script", str(tmp_path / "job.py"), "--gpus", "1",
            "--max-hours", "0.1", **CAROL,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        job_id = json.loads(submitted.stdout)["job_id"]
        waited = up.dante("jobs", "wait", job_id, "--timeout", "90", **CAROL)
        assert waited.returncode == 0, waited.stdout + waited.stderr
        statement = json.loads(up.dante("jobs", "statement", job_id, "--json", **CAROL).stdout)

        samples = scrape(url)
        assert value(samples, "dante_agent_jobs_running") == 0
        assert value(samples, "dante_agent_attempts_started_total") == 1
        assert value(samples, "dante_agent_attempts_finished_total", outcome="completed") == 1
        assert value(samples, "dante_agent_attempts_finished_total", outcome="failed") == 0
        # What the agent reported is what the platform recorded and billed.
        assert value(samples, "dante_agent_usage_gpu_ms_total") == statement["gpu_ms"] > 0
        reports = value(samples, "dante_agent_usage_reports_total")
        assert reports is not None and reports >= 1
        beats = value(samples, "dante_agent_heartbeats_total", result="sent")
        assert beats is not None and beats >= 1
        assert value(samples, "dante_agent_reconnects_total", how="reconnected") == 0
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            out, _ = agent.communicate(timeout=60)
            assert f"agent metrics: http://127.0.0.1:{port}/metrics" in out
        up.stop()
