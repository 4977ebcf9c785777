"""Simulated GPUs from a spec string."""

from __future__ import annotations

import pytest

from dante.agent.gpus import parse_simulate, simulated_detection
from dante.agent.gpus.simulate import infer_vendor


def test_a_group_gives_that_many_simulated_gpus() -> None:
    gpus = parse_simulate("2xNVIDIA H100 80GB HBM3:80")

    assert [g.index for g in gpus] == [0, 1]
    assert all(g.simulated for g in gpus)
    assert {g.model for g in gpus} == {"NVIDIA H100 80GB HBM3"}
    assert {g.vendor for g in gpus} == {"nvidia"}
    assert {g.vram_mb for g in gpus} == {80 * 1024}
    assert gpus[0].vram_gb == 80
    assert all(g.uuid.startswith("SIM-") for g in gpus)
    assert gpus[0].uuid != gpus[1].uuid


def test_uuids_are_the_same_every_time() -> None:
    spec = "1xRTX 4090:24,1xA100:80"

    assert [g.uuid for g in parse_simulate(spec)] == [g.uuid for g in parse_simulate(spec)]
    assert parse_simulate("1xRTX 4090:24")[0].uuid != parse_simulate("1xRTX 4090:48")[0].uuid


def test_several_groups_are_numbered_in_order() -> None:
    gpus = parse_simulate("1xRTX 4090:24, 2 x A100 : 80")

    assert [(g.index, g.model, g.vram_mb) for g in gpus] == [
        (0, "RTX 4090", 24 * 1024),
        (1, "A100", 80 * 1024),
        (2, "A100", 80 * 1024),
    ]


def test_count_may_be_left_out() -> None:
    [gpu] = parse_simulate("Apple M2 Ultra:192")

    assert (gpu.vendor, gpu.vram_mb) == ("apple", 192 * 1024)


@pytest.mark.parametrize(
    ("model", "vendor"),
    [
        ("NVIDIA H100 80GB HBM3", "nvidia"),
        ("RTX 4090", "nvidia"),
        ("A100", "nvidia"),
        ("H100", "nvidia"),
        ("AMD Instinct MI250X", "amd"),
        ("MI300X", "amd"),
        ("Radeon RX 7900 XTX", "amd"),
        ("Apple M2 Ultra", "apple"),
        ("M3 Max", "apple"),
        ("Intel Arc A770", "intel"),
        ("Intel Data Center GPU Max 1550", "intel"),
        ("Tesla M60", "nvidia"),
        ("Some Accelerator", "nvidia"),
    ],
)
def test_vendor_is_inferred_from_the_model_name(model: str, vendor: str) -> None:
    assert infer_vendor(model) == vendor


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "the simulate spec is empty"),
        ("   ", "the simulate spec is empty"),
        ("0xRTX 4090:24", "asks for 0 GPUs; the count must be at least 1"),
        ("-1xRTX 4090:24", "asks for -1 GPUs"),
        ("2xRTX 4090", "gives no VRAM"),
        ("2xRTX 4090:", "VRAM must be a whole number of GB, not ''"),
        ("2xRTX 4090:24GB", "VRAM must be a whole number of GB, not '24GB'"),
        ("2xRTX 4090:0", "VRAM must be between 1 and 16384 GB"),
        ("2x:24", "has no model name"),
        ("1xRTX 4090:24,", "empty GPU group"),
        ("65xH100:80", "at most 64 simulated GPUs"),
        ("1x" + "H" * 101 + ":80", "longer than 100 characters"),
    ],
)
def test_malformed_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_simulate(spec)


def test_simulated_detection_reports_a_simulated_backend() -> None:
    detection = simulated_detection("3xRTX 4090:24")

    assert len(detection.gpus) == 3
    assert [(r.name, r.found, r.reason) for r in detection.backends] == [("simulated", 3, "")]
