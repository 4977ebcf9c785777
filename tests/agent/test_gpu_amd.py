"""AMD detection from recorded `rocm-smi --json` outputs of several ROCm releases."""

from __future__ import annotations

import pytest

from dante.agent.gpus import BackendUnavailable
from dante.agent.gpus.rocm import ROCM_SMI_ARGS, AmdBackend, parse_rocm_smi
from tests.agent.tools import Replay, fixture


def test_radeon_rx_7900_xt_with_memory() -> None:
    replay = Replay(
        {ROCM_SMI_ARGS: fixture("amd/rx7900xt-showproductname-showuse-showmeminfo.json")}
    )

    [gpu] = AmdBackend(replay).detect()

    assert replay.calls == [ROCM_SMI_ARGS]
    assert gpu.vendor == "amd"
    assert gpu.index == 0
    assert gpu.model == "AMD Radeon RX 7900 XT"
    assert gpu.vram_mb == 21458059264 // (1024 * 1024) == 20464
    assert gpu.vram_gb == 20
    # That output carries no unique id and no bus: the card number is all there is.
    assert gpu.uuid == "AMD-card0"
    assert not gpu.simulated


def test_instinct_mi250x_product_name_only() -> None:
    [gpu] = parse_rocm_smi(fixture("amd/mi250x-showproductname.json"))

    assert gpu.model == "AMD INSTINCT MI200 (MCM) OAM LC MBA HPE C2"
    # No VRAM was printed: zero, not a guess.
    assert gpu.vram_mb == 0


def test_rocm_6_key_names_unique_id_and_power_cap() -> None:
    [gpu] = parse_rocm_smi(fixture("amd/rx7900xtx-all-trimmed.json"))

    assert gpu.model == "AMD Navi 31 [Radeon RX 7900 XT/7900 XTX/7900 GRE/7900M]"
    assert gpu.uuid == "0x3d4595974090853c"
    assert gpu.power_limit_w == 220


def test_unique_id_not_available_falls_back_to_the_pci_bus() -> None:
    [gpu] = parse_rocm_smi(fixture("amd/radeon780m-all-trimmed.json"))

    assert gpu.model == "AMD Phoenix3"
    assert gpu.uuid == "AMD-PCI-0000:C4:00.0"
    assert gpu.pci_bus_id == "0000:C4:00.0"
    assert gpu.power_limit_w is None


def test_cards_are_ordered_by_number_and_the_system_section_gives_the_driver() -> None:
    output = """{
      "system": {"Driver version": "6.8.5"},
      "card10": {"Card series": "Instinct MI210", "VRAM Total Memory (B)": "68702699520"},
      "card2": {"Card series": "Instinct MI210", "VRAM Total Memory (B)": "N/A"}
    }"""

    gpus = parse_rocm_smi(output)

    assert [g.index for g in gpus] == [2, 10]
    assert [g.vram_mb for g in gpus] == [0, 65520]
    assert {g.driver_version for g in gpus} == {"6.8.5"}


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("WARNING: No AMD GPUs specified", "not JSON"),
        ("[1, 2]", "unexpected shape"),
    ],
)
def test_unreadable_output_is_a_reason(output: str, reason: str) -> None:
    with pytest.raises(BackendUnavailable, match=reason):
        parse_rocm_smi(output)


def test_json_without_cards_means_no_gpus() -> None:
    assert parse_rocm_smi('{"system": {"Driver version": "6.8.5"}}') == []
