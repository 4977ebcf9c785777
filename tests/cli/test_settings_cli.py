"""The platform's settings through `dante up`: options and a TOML file, used by the handlers
in `dante up`'s child (which reads them from the log), recorded in the log once per change,
and refused when they cannot be."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli.cli import Ran, run_dante
from tests.cli.platform_proc import UpProcess, dante
from tests.cli.test_up import _children

pytestmark = pytest.mark.slow


def settings_events(up: UpProcess) -> list[dict[str, Any]]:
    ran = up.dante("events", "--json")
    assert ran.returncode == 0, ran.stderr
    found = [json.loads(line) for line in ran.stdout.splitlines() if line.strip()]
    return [e["event"] for e in found if e["event"]["type"] == "SettingsChanged"]


def renter(up: UpProcess, *args: str) -> Ran:
    env = {"XDG_CONFIG_HOME": up.env["XDG_CONFIG_HOME"], "DANTE_PASSWORD": "demo-pass"}
    return run_dante(*args, url=up.url, user="demo-user", env=env, timeout=120)


def demo_agent(up: UpProcess) -> int:
    assert up.process is not None
    (pid,) = [
        pid for pid, cmd in _children(up.process.pid).items() if b"\x00agent\x00run\x00" in cmd
    ]
    return pid


def providers(up: UpProcess) -> dict[str, int]:
    report = json.loads(up.dante("status", "--json").stdout)
    counts: dict[str, int] = report["summary"]["providers"]
    return counts


def test_tuned_settings_are_used_and_recorded_once_per_change(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "LOG_LEVEL": "warning"}
    data = tmp_path / "data"
    tuned = ("--fee-bps", "1000", "--offline-after-s", "10")
    up = UpProcess(data, None, "--demo", *tuned, env=env).start(timeout=120)
    try:
        (recorded,) = settings_events(up)
        assert recorded["changed"] == ["fee_bps", "offline_after_s"]
        assert (recorded["fee_bps"], recorded["offline_after_s"]) == (1000, 10)
        assert recorded["grace_s"] == 300  # the others as they were
        assert recorded["source"] == "dante up --fee-bps 1000 --offline-after-s 10"
        in_force = json.loads(up.dante("status", "--json").stdout)["settings"]
        assert (in_force["fee_bps"], in_force["offline_after_s"], in_force["grace_s"]) == (
            1000,
            10,
            300,
        )
        assert in_force["seq"] > 0
        said = up.dante("status").stdout
        assert "fee 1000 bps" in said and f"recorded at sequence {in_force['seq']}" in said

        # The scheduler (in `dante up`'s child) fixes the tuned fee in the attempt.
        (tmp_path / "job.py").write_text("import time\ntime.sleep(2)\n")
        ran = renter(
            up, "jobs", "submit", "--json", "--script", str(tmp_path / "job.py"),
            "--gpus", "1", "--max-hours", "0.1",
        )  # fmt: skip
        assert ran.code == 0, ran
        job_id = ran.json()["job_id"]
        assert renter(up, "jobs", "wait", job_id, "--timeout", "90").code == 0
        statement = renter(up, "jobs", "statement", job_id, "--json").json()
        (attempt,) = statement["attempts"]
        assert attempt["fee_bps"] == 1000
        assert statement["fee_udgpu"] == statement["charged_udgpu"] * 1000 // 10_000 > 0

        # Liveness takes a provider silent for 10 s (not the default 30) for offline.
        agent = demo_agent(up)
        os.kill(agent, signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            while providers(up).get("offline") != 1 and time.monotonic() - stopped < 25:
                time.sleep(0.5)
            assert providers(up) == {"offline": 1}
        finally:
            os.kill(agent, signal.SIGCONT)
    finally:
        assert up.stop() == 0

    # The same settings from a file: nothing new in the log.
    config = tmp_path / "dante.toml"
    config.write_text("# the platform's rules\nfee_bps = 1000\noffline_after_s = 10\n")
    again = UpProcess(data, up.port, "--config", str(config), env=env).start()
    try:
        assert len(settings_events(again)) == 1
    finally:
        assert again.stop() == 0

    # Without them, the defaults are back in force: recorded, once.
    plain = UpProcess(data, up.port, env=env).start()
    try:
        first, back = settings_events(plain)
        assert first["fee_bps"] == 1000
        assert back["changed"] == ["fee_bps", "offline_after_s"]
        assert (back["fee_bps"], back["offline_after_s"]) == (500, 30)
        assert back["source"] == "dante up"
        said = plain.dante("events").stdout
        assert "settings changed: fee_bps 1000, offline_after_s 10 (dante up --fee-bps" in said
        # The audit and the views' replay read past them.
        audited = plain.dante("audit")
        assert audited.returncode == 0, audited.stdout + audited.stderr
    finally:
        assert plain.stop() == 0


@pytest.mark.parametrize(
    ("args", "config", "error"),
    [
        (("--grace-s", "-1"), None, "--grace-s: grace_s is from 0 to 604,800 seconds, not -1"),
        (("--fee-bps", "10001"), None, "fee_bps is from 0 to 10,000 basis points, not 10,001"),
        ((), "grace = 60\n", "there is no setting 'grace' (there are fee_bps, hold_window_s"),
        ((), "grace_s = '60'\n", "grace_s is a whole number of seconds, not '60'"),
        ((), "offline_after_s = 5\n", "offline_after_s is from 10 to 86,400 seconds, not 5"),
        ((), "grace_s = \n", "not valid TOML"),
    ],
)
def test_bad_settings_stop_dante_up_before_it_starts(
    tmp_path: Path, args: tuple[str, ...], config: str | None, error: str
) -> None:
    options = list(args)
    if config is not None:
        (tmp_path / "bad.toml").write_text(config)
        options += ["--config", str(tmp_path / "bad.toml")]
    result = dante("up", "--data-dir", str(tmp_path / "data"), *options)
    assert result.returncode == 2, result.stderr
    assert error in result.stderr
    assert not (tmp_path / "data").exists()


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    result = dante("serve", "handlers", "--data-dir", str(tmp_path), "--config", str(missing))
    assert result.returncode == 2
    assert f"--config {missing}: No such file or directory" in result.stderr
