"""Trying the backends in order, and running vendor tools as real processes."""

from __future__ import annotations

import sys

import pytest

from dante.agent.gpus import BackendReport, BackendUnavailable, detect_gpus
from dante.agent.gpus.nvml import NvidiaBackend
from dante.agent.gpus.rocm import ROCM_SMI_ARGS, AmdBackend
from dante.agent.gpus.tools import as_int, reported, run_tool
from dante.schemas.values import Gpu
from tests.agent.recorded_nvml import RecordedNvml, recording
from tests.agent.tools import Replay, fixture


class Broken:
    name = "broken"

    def detect(self) -> list[Gpu]:
        raise KeyError("card0")


class Empty:
    name = "empty"

    def detect(self) -> list[Gpu]:
        return []


def test_first_backend_with_gpus_wins_and_later_ones_are_not_tried() -> None:
    amd = Replay({ROCM_SMI_ARGS: fixture("amd/rx7900xt-showproductname-showuse-showmeminfo.json")})
    nvidia = NvidiaBackend(RecordedNvml(recording("h100")))

    detection = detect_gpus([AmdBackend(amd), nvidia])

    assert [g.vendor for g in detection.gpus] == ["amd"]
    assert detection.backends == (BackendReport("amd", 1),)


def test_every_backend_that_found_nothing_says_why() -> None:
    nvidia = NvidiaBackend(RecordedNvml(recording("h100"), init_error=12))
    amd = AmdBackend(Replay({}))

    detection = detect_gpus([nvidia, amd, Empty(), Broken()])

    assert detection.gpus == ()
    assert [(r.name, r.found) for r in detection.backends] == [
        ("nvidia", 0),
        ("amd", 0),
        ("empty", 0),
        ("broken", 0),
    ]
    reasons = [r.reason for r in detection.backends]
    assert "libnvidia-ml.so.1) is not installed" in reasons[0]
    assert reasons[1] == "rocm-smi failed with exit code 1: no recording"
    assert reasons[2] == "no GPUs found"
    assert reasons[3] == "failed unexpectedly: KeyError('card0')"


def test_a_failing_backend_does_not_hide_a_later_one() -> None:
    detection = detect_gpus([Broken(), NvidiaBackend(RecordedNvml(recording("rtx4090")))])

    assert len(detection.gpus) == 2
    assert detection.backends[-1] == BackendReport("nvidia", 2)


def test_default_detection_on_this_machine_reports_each_vendor() -> None:
    detection = detect_gpus()

    names = [r.name for r in detection.backends]
    assert names == ["nvidia", "nvidia-smi", "amd", "apple", "intel"][: len(names)]
    if not detection.gpus:
        assert len(names) == 5
        assert all(r.reason for r in detection.backends)


def test_run_tool_returns_standard_output() -> None:
    assert run_tool(["echo", "hello"]) == "hello\n"


def test_run_tool_missing_tool() -> None:
    with pytest.raises(BackendUnavailable, match="no-such-gpu-tool is not installed"):
        run_tool(["no-such-gpu-tool", "--json"])


def test_run_tool_failure_gives_the_last_error_line() -> None:
    script = (
        "import sys; print('first', file=sys.stderr); "
        "print('rocm died', file=sys.stderr); sys.exit(2)"
    )
    with pytest.raises(BackendUnavailable, match="failed with exit code 2: rocm died"):
        run_tool([sys.executable, "-c", script])


def test_run_tool_time_limit() -> None:
    with pytest.raises(BackendUnavailable, match=r"did not answer within 0\.3 s"):
        run_tool(["sleep", "5"], timeout_s=0.3)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("68702699520", 68702699520),
        ("220.0", 220),
        (17179869184, 17179869184),
        ("N/A", None),
        ("N/A (Secondary die)", None),
        ("", None),
        (None, None),
        ("(409Mhz)", None),
    ],
)
def test_numbers_in_tool_output(value: object, expected: int | None) -> None:
    assert as_int(value) == expected


def test_not_reported_values() -> None:
    assert reported("  Radeon RX 7900 XT ") == "Radeon RX 7900 XT"
    assert reported("N/A") is None
    assert reported("unknown") is None
