"""`dante status` lists the platform's parts (the commands, the handlers, the views) as the
micro services they answer as, and says which is missing when the process that runs it is
gone: `dante up` with its `dante serve handlers views` child, and one more `dante serve
handlers` in a process of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.platform_proc import UpProcess
from tests.cli.test_up import _serve_child

pytestmark = pytest.mark.slow

HANDLERS = ["scheduler", "billing", "dispatcher", "liveness"]


def status(platform: UpProcess) -> dict[str, Any]:
    ran = platform.dante("status", "--json")
    assert ran.returncode == 0, ran.stderr
    report: dict[str, Any] = json.loads(ran.stdout)
    return report


def test_status_lists_every_part_and_says_which_is_missing(tmp_path: Path) -> None:
    platform = UpProcess(tmp_path / "data", None, "--processes", "2").start()
    assert platform.process is not None
    extra: subprocess.Popen[str] | None = None
    child = _serve_child(platform.process.pid)
    try:
        report = status(platform)
        parts = report["parts"]
        assert report["missing"] == []
        assert [parts[name]["state"] for name in ("commands", "handlers", "views")] == ["up"] * 3
        (handlers,) = parts["handlers"]["instances"]
        assert [h["handler"] for h in handlers["handlers"]] == HANDLERS
        assert all(h["lag"] == 0 for h in handlers["handlers"])
        (views,) = parts["views"]["instances"]
        assert views["lag"] == 0 and views["position"] == report["stream"]["last_seq"]
        assert report["settings"]["seq"] == 0 and report["settings"]["fee_bps"] == 500
        said = platform.dante("status").stdout
        assert "fee 500 bps" in said and "(the defaults)" in said
        assert "handlers" in said and "scheduler 0 behind" in said and "(0 behind)" in said

        # A second handlers process, as on another machine of a cluster.
        extra = subprocess.Popen(
            [sys.executable, "-m", "dante", "--nats-url", platform.url, "serve", "handlers",
             "--data-dir", str(platform.data_dir)],
            stdout=subprocess.PIPE,
            text=True,
            env=platform.env,
        )  # fmt: skip
        assert extra.stdout is not None
        assert extra.stdout.readline().strip() == "ready"
        report = status(platform)
        assert len(report["parts"]["handlers"]["instances"]) == 2

        # `dante up`'s child stops answering: the views are missing, the handlers of the
        # other process still answer.
        os.kill(child, signal.SIGSTOP)
        try:
            report = status(platform)
            assert report["missing"] == ["views"]
            assert report["parts"]["views"] == {"state": "missing", "instances": []}
            assert len(report["parts"]["handlers"]["instances"]) == 1
            assert "missing: no process that runs them answers" in platform.dante("status").stdout
            # Its process gone too: no handlers answer.
            extra.send_signal(signal.SIGTERM)
            assert extra.wait(timeout=30) == 0
            report = status(platform)
            assert report["missing"] == ["handlers", "views"]
        finally:
            os.kill(child, signal.SIGCONT)
        report = status(platform)
        assert report["missing"] == []
    finally:
        if extra is not None:
            if extra.poll() is None:
                extra.kill()
            extra.communicate()
        platform.stop()
