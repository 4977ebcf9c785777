"""`dante agent gpus`, run as the real command line in a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dante.agent.gpus import detect_gpus
from tests.agent.agent_proc import REPO
from tests.factories import SOLANA


def dante(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dante", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_simulated_gpus_as_json() -> None:
    done = dante(
        "agent", "gpus", "--json", "--simulate", "2xNVIDIA H100 80GB HBM3:80,1xRTX 4090:24"
    )

    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    assert [(g["index"], g["model"], g["vram_mb"], g["simulated"]) for g in document["gpus"]] == [
        (0, "NVIDIA H100 80GB HBM3", 81920, True),
        (1, "NVIDIA H100 80GB HBM3", 81920, True),
        (2, "RTX 4090", 24576, True),
    ]
    assert all(g["vendor"] == "nvidia" and g["uuid"].startswith("SIM-") for g in document["gpus"])
    assert document["backends"] == [{"name": "simulated", "found": 3, "reason": ""}]


def test_simulated_gpus_as_a_table() -> None:
    done = dante("agent", "gpus", "--simulate", "1xAMD Instinct MI250X:64,1xRTX 4090:24")

    assert done.returncode == 0, done.stderr
    header, first, second = done.stdout.splitlines()
    assert header.split() == ["INDEX", "VENDOR", "MODEL", "VRAM", "UUID"]
    assert first.split()[:2] == ["0", "amd"]
    assert "AMD Instinct MI250X" in first
    assert "64 GB" in first
    assert first.endswith("simulated")
    assert second.split()[:2] == ["1", "nvidia"]
    # Columns line up: each row's model starts where the header's MODEL does.
    assert first.index("AMD") == second.index("RTX") == header.index("MODEL")


def test_malformed_simulate_spec_is_refused_plainly() -> None:
    done = dante("agent", "gpus", "--simulate", "2xRTX 4090")

    assert done.returncode == 2
    assert "gives no VRAM" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["gpus", "run"])
def test_a_count_left_out_is_a_usage_error_before_anything_is_reached(
    command: str, tmp_path: Path
) -> None:
    with socket.socket() as platform:  # where the agent would connect: it must not
        platform.bind(("127.0.0.1", 0))
        platform.listen()
        platform.setblocking(False)  # noqa: FBT003
        host, port = platform.getsockname()
        options = [] if command == "gpus" else ["--nats-url", f"nats://{host}:{port}"]
        done = subprocess.run(
            [
                sys.executable, "-m", "dante", "agent", command, "--simulate", "xH100:80",
                *options,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("DANTE_")},
                "DANTE_USERNAME": "bob",
                "DANTE_PASSWORD": "bob-secret-1",
                "SOLANA_WALLET_ADDRESS": SOLANA,
                "XDG_CONFIG_HOME": str(tmp_path / "config"),
                "DANTE_DATA_DIR": str(tmp_path / "data"),
                "PYTHONPATH": str(REPO),
            },
        )  # fmt: skip
        with pytest.raises(BlockingIOError):
            platform.accept()

    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"dante agent {command}: --simulate: GPU group 'xH100:80' has no count before its 'x'; "
        "expected [COUNTx]MODEL:VRAM_GB, e.g. '2xNVIDIA H100 80GB HBM3:80' (to name a model "
        "that begins with x, give its count: '1xXavier:32')"
    )
    assert not (tmp_path / "data").exists()  # no work directory made either


def test_detection_on_this_machine() -> None:
    expected = detect_gpus()
    done = dante("agent", "gpus", "--json")
    document: dict[str, Any] = json.loads(done.stdout)

    assert [b["name"] for b in document["backends"]] == [r.name for r in expected.backends]
    if expected.gpus:
        assert done.returncode == 0
    else:
        # Without a GPU: exit 1, and every backend tried says why it found none.
        assert done.returncode == 1
        assert document["gpus"] == []
        assert all(b["found"] == 0 and b["reason"] for b in document["backends"])
        human = dante("agent", "gpus")
        assert human.returncode == 1
        assert human.stdout.startswith("No GPU found. Tried:")
        for report in expected.backends:
            assert f"{report.name}" in human.stdout
            assert report.reason in human.stdout
        assert "--simulate" in human.stdout
