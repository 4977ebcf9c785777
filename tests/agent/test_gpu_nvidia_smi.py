"""NVIDIA detection and telemetry through `nvidia-smi`, for when NVML cannot be loaded: a fake
`nvidia-smi` on PATH prints what the real one prints (fixtures/README.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pynvml
import pytest

from dante.agent.gpus import BackendReport, BackendUnavailable, detect_gpus
from dante.agent.gpus.nvidia_smi import (
    GPU_FIELDS,
    TELEMETRY_FIELDS,
    NvidiaSmiBackend,
    NvidiaSmiTelemetry,
    parse_csv,
)
from dante.agent.gpus.nvml import NvidiaBackend
from dante.agent.gpus.telemetry import Reading
from dante.schemas.values import Gpu
from tests.agent.recorded_nvml import RecordedNvml, recording
from tests.agent.tools import FIXTURES

#: A stand-in for nvidia-smi: the recorded CSV for a --query-gpu of the given fields, the
#: recorded `nvidia-smi -q` for -q, and nvidia-smi's own refusal of an unknown field.
FAKE = """#!{python}
import sys
args = sys.argv[1:]
query = next((a.split("=", 1)[1] for a in args if a.startswith("--query-gpu=")), None)
if query is not None:
    known = {known!r}
    for field in query.split(","):
        if field not in known:
            print(f'Field "{{field}}" is not a valid field to query.', file=sys.stderr)
            sys.exit(2)
    if "--format=csv,noheader,nounits" not in args:
        sys.exit(3)
    csv = {telemetry!r} if query.startswith("index,utilization.gpu") else {gpus!r}
    lines = open(csv).read().splitlines()
    if "compute_cap" not in query and csv == {gpus!r}:
        lines = [line.rsplit(", ", 1)[0] for line in lines]
    print("\\n".join(lines))
elif "-q" in args:
    print(open({q!r}).read(), end="")
else:
    sys.exit(4)
"""


def fake_nvidia_smi(folder: Path, machine: str = "h100", *, old_driver: bool = False) -> Path:
    """Write `nvidia-smi` into `folder` (put it first on PATH) for a recorded machine."""
    nvidia = FIXTURES / "nvidia"
    known = set(GPU_FIELDS) | set(TELEMETRY_FIELDS)
    if old_driver:
        known.discard("compute_cap")
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "nvidia-smi"
    tool.write_text(
        FAKE.format(
            python=sys.executable,
            known=sorted(known),
            gpus=str(nvidia / f"{machine}-nvidia-smi-query-gpu.csv"),
            telemetry=str(nvidia / "h100-nvidia-smi-query-telemetry.csv"),
            q=str(nvidia / f"{'h100-sxm' if machine == 'h100' else machine}-nvidia-smi-q.txt"),
        )
    )
    tool.chmod(0o755)
    return folder


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = fake_nvidia_smi(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def test_nvidia_smi_gives_the_same_gpus_as_nvml(on_path: Path) -> None:
    del on_path
    by_smi = NvidiaSmiBackend().detect()

    # The same machine through NVML (recorded): every field agrees.
    assert by_smi == NvidiaBackend(RecordedNvml(recording("h100"))).detect()
    assert by_smi[1] == Gpu(
        index=1,
        uuid="GPU-7c3cadbd-17e5-0913-f69b-c618122ea0cd",
        vendor="nvidia",
        model="NVIDIA H100 80GB HBM3",
        vram_mb=81559,
        driver_version="565.57.01",
        cuda_version="12.7",
        compute_capability="9.0",
        power_limit_w=700,
        pci_bus_id="00000000:2A:00.0",
    )


def test_rtx_4090_through_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = fake_nvidia_smi(tmp_path / "bin", "rtx4090")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

    assert NvidiaSmiBackend().detect() == NvidiaBackend(RecordedNvml(recording("rtx4090"))).detect()


def test_a_driver_without_compute_cap_is_asked_again_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = fake_nvidia_smi(tmp_path / "bin", old_driver=True)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

    gpus = NvidiaSmiBackend().detect()

    assert [(g.model, g.compute_capability, g.vram_mb) for g in gpus] == [
        ("NVIDIA H100 80GB HBM3", None, 81559)
    ] * 2


def test_nvml_that_cannot_load_falls_back_to_nvidia_smi(on_path: Path) -> None:
    del on_path
    missing = RecordedNvml(recording("h100"), init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    detection = detect_gpus([NvidiaBackend(missing), NvidiaSmiBackend()])

    assert [g.uuid for g in detection.gpus] == [
        "GPU-b42dd28e-ffdd-8720-1df0-98bd8cdc05b1",
        "GPU-7c3cadbd-17e5-0913-f69b-c618122ea0cd",
    ]
    assert detection.backends == (
        BackendReport(
            "nvidia", 0, "the NVIDIA driver's NVML library (libnvidia-ml.so.1) is not installed"
        ),
        BackendReport("nvidia-smi", 2),
    )


def test_without_nvidia_smi_the_reason_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")

    with pytest.raises(BackendUnavailable, match="nvidia-smi is not installed"):
        NvidiaSmiBackend().detect()


def test_values_a_card_does_not_report_are_left_empty() -> None:
    line = "0, GPU-x, NVIDIA A10, 23028, 535.54.03, 00000000:00:1E.0, [N/A], [Not Supported]\n"

    [row] = parse_csv(line, GPU_FIELDS)

    assert (row["enforced.power.limit"], row["compute_cap"], row["memory.total"]) == (
        None,
        None,
        "23028",
    )
    with pytest.raises(ValueError, match="has 3 fields, expected 8"):
        parse_csv("0, GPU-x, A10\n", GPU_FIELDS)


def test_telemetry_through_nvidia_smi(on_path: Path) -> None:
    del on_path
    telemetry = NvidiaSmiTelemetry()

    assert telemetry.sample([1, 0, 7]) == {
        1: Reading(utilization_pct=0, memory_used_mb=1, power_w=83, temperature_c=30),
        0: Reading(utilization_pct=0, memory_used_mb=1, power_w=101, temperature_c=30),
        7: Reading(),
    }


def test_dante_agent_gpus_falls_back_to_nvidia_smi(on_path: Path) -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass  # as on a machine whose driver library is not on the path
    else:
        pynvml.nvmlShutdown()
        pytest.skip("NVML loads on this machine: the fallback is not taken")
    done = subprocess.run(
        [sys.executable, "-m", "dante", "agent", "gpus", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PATH": f"{on_path}{os.pathsep}{os.environ['PATH']}"},
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert [(g["model"], g["vram_mb"], g["cuda_version"]) for g in document["gpus"]] == [
        ("NVIDIA H100 80GB HBM3", 81559, "12.7")
    ] * 2
    assert [(b["name"], b["found"]) for b in document["backends"]][:2] == [
        ("nvidia", 0),
        ("nvidia-smi", 2),
    ]
