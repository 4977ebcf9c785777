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


EXPECTED = "expected [COUNTx]MODEL:VRAM_GB, e.g. '2xNVIDIA H100 80GB HBM3:80'"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "the simulate spec is empty"),
        ("   ", "the simulate spec is empty"),
        ("xH100:80", "GPU group 'xH100:80' has no count before its 'x'"),
        ("x H100:80", "GPU group 'x H100:80' has no count before its 'x'"),
        ("XH100:80", "GPU group 'XH100:80' has no count before its 'x'"),
        ("1xRTX 4090:24,xH100:80", "GPU group 'xH100:80' has no count before its 'x'"),
        ("0xH100:80", "GPU group '0xH100:80' asks for 0 GPUs; the count must be at least 1"),
        ("0xRTX 4090:24", "asks for 0 GPUs; the count must be at least 1"),
        ("-1xH100:80", "GPU group '-1xH100:80' asks for -1 GPUs"),
        ("2x:80", "GPU group '2x:80' has no model name"),
        ("2xH100", "GPU group '2xH100' gives no VRAM"),
        ("2xRTX 4090:", "VRAM must be a whole number of GB, not ''"),
        ("2xH100:abc", "GPU group '2xH100:abc': VRAM must be a whole number of GB, not 'abc'"),
        ("2xRTX 4090:24GB", "VRAM must be a whole number of GB, not '24GB'"),
        # A digit to str.isdigit, not to int().
        ("2xH100:\u00b2", "VRAM must be a whole number of GB, not '\u00b2'"),
        ("2xH100:0", "GPU group '2xH100:0': VRAM must be between 1 and 16384 GB, not 0"),
        ("2xH100:16385", "VRAM must be between 1 and 16384 GB, not 16385"),
        ("1xRTX 4090:24,", "empty GPU group"),
    ],
)
def test_malformed_groups_say_which_part_is_wrong_and_what_is_expected(
    spec: str, message: str
) -> None:
    with pytest.raises(ValueError, match=r"expected") as raised:
        parse_simulate(spec)

    assert message in str(raised.value)
    assert EXPECTED in str(raised.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("65xH100:80", "at most 64 simulated GPUs"),
        ("1x" + "H" * 101 + ":80", "longer than 100 characters"),
    ],
)
def test_specs_beyond_the_limits_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_simulate(spec)


def test_a_model_that_begins_with_x_is_named_with_a_count() -> None:
    with pytest.raises(ValueError, match=r"give its count: '1xXavier:32'"):
        parse_simulate("Xavier:32")

    [gpu] = parse_simulate("1xXavier:32")
    assert (gpu.model, gpu.vram_gb) == ("Xavier", 32)


@pytest.mark.parametrize(
    ("spec", "models"),
    [
        ("2xRadeon RX 7900 XTX:24", ["Radeon RX 7900 XTX"] * 2),
        ("1xNVIDIA GeForce RTX 4090:24", ["NVIDIA GeForce RTX 4090"]),
        ("NVIDIA H100 80GB HBM3:80", ["NVIDIA H100 80GB HBM3"]),
        ("Radeon RX 7900 XTX:24", ["Radeon RX 7900 XTX"]),
        ("3X A100:40", ["A100"] * 3),
        (
            "1xAMD Instinct MI250X:64,AMD Instinct MI300X:192",
            ["AMD Instinct MI250X", "AMD Instinct MI300X"],
        ),
    ],
)
def test_names_with_an_x_in_them_are_names(spec: str, models: list[str]) -> None:
    assert [gpu.model for gpu in parse_simulate(spec)] == models


def test_simulated_detection_reports_a_simulated_backend() -> None:
    detection = simulated_detection("3xRTX 4090:24")

    assert len(detection.gpus) == 3
    assert [(r.name, r.found, r.reason) for r in detection.backends] == [("simulated", 3, "")]
