"""NVIDIA GPUs through `nvidia-smi`, for a machine whose NVML library cannot be loaded.

A driver installed without `libnvidia-ml.so.1` on the loader's path (a container with the
driver's tools mounted, a custom install prefix) still has `nvidia-smi`, which carries its
own copy of NVML. Its CSV query gives the same records as NVML does:

    nvidia-smi --query-gpu=index,uuid,name,memory.total,driver_version,pci.bus_id,
               enforced.power.limit,compute_cap --format=csv,noheader,nounits

one line per GPU, fields separated by ", ", memory in MiB, power in watts, and `[N/A]` or
`[Not Supported]` where a card has no value. `compute_cap` is unknown to drivers before 510;
those are asked again without it. The CUDA version is read from the header of
`nvidia-smi -q`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import structlog

from dante.agent.gpus.backend import BackendUnavailable
from dante.agent.gpus.telemetry import Reading
from dante.agent.gpus.tools import ToolRunner, as_int, reported, run_tool
from dante.schemas.values import Gpu

log = structlog.get_logger(__name__)

TOOL: Final = "nvidia-smi"
GPU_FIELDS: Final = (
    "index",
    "uuid",
    "name",
    "memory.total",
    "driver_version",
    "pci.bus_id",
    "enforced.power.limit",
    "compute_cap",
)
TELEMETRY_FIELDS: Final = (
    "index",
    "utilization.gpu",
    "memory.used",
    "power.draw",
    "temperature.gpu",
)
_CUDA: Final = re.compile(r"^CUDA Version\s*:\s*(\d+\.\d+)", re.MULTILINE)


def query_argv(fields: Sequence[str]) -> list[str]:
    return [TOOL, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]


def parse_csv(output: str, fields: Sequence[str]) -> list[dict[str, str | None]]:
    """Each line of a `--format=csv,noheader,nounits` answer as {field: value or None}."""
    rows: list[dict[str, str | None]] = []
    for number, line in enumerate(output.splitlines(), start=1):
        if not line.strip():
            continue
        values = [value.strip() for value in line.split(",")]
        if len(values) != len(fields):
            raise ValueError(
                f"{TOOL} line {number} has {len(values)} fields, expected {len(fields)}: {line!r}"
            )
        rows.append({field: _value(value) for field, value in zip(fields, values, strict=True)})
    return rows


def _value(text: str) -> str | None:
    return reported(text.strip("[]"))


class NvidiaSmiBackend:
    """Finds NVIDIA GPUs with `nvidia-smi` when NVML itself cannot be loaded."""

    name = "nvidia-smi"

    def __init__(self, run: ToolRunner = run_tool) -> None:
        self._run = run

    def detect(self) -> list[Gpu]:
        fields: tuple[str, ...] = GPU_FIELDS
        try:
            output = self._run(query_argv(fields))
        except BackendUnavailable as exc:
            if "compute_cap" not in str(exc):
                raise
            fields = tuple(field for field in GPU_FIELDS if field != "compute_cap")
            output = self._run(query_argv(fields))
        cuda = self._cuda_version()
        return [_gpu(row, cuda) for row in parse_csv(output, fields)]

    def _cuda_version(self) -> str | None:
        try:
            header = self._run([TOOL, "-q", "-d", "COMPUTE"])
        except BackendUnavailable:
            return None
        found = _CUDA.search(header)
        return found.group(1) if found else None


def _gpu(row: dict[str, str | None], cuda: str | None) -> Gpu:
    index, uuid, model = as_int(row["index"]), row["uuid"], row["name"]
    total = as_int(row["memory.total"])
    if index is None or uuid is None or model is None or total is None:
        raise BackendUnavailable(f"{TOOL} left out the index, UUID, name or memory of a GPU: {row}")
    return Gpu(
        index=index,
        uuid=uuid,
        vendor="nvidia",
        model=model,
        vram_mb=total,
        driver_version=row["driver_version"],
        cuda_version=cuda,
        compute_capability=row.get("compute_cap"),
        power_limit_w=as_int(row["enforced.power.limit"]),
        pci_bus_id=row["pci.bus_id"],
    )


class NvidiaSmiTelemetry:
    """Readings from `nvidia-smi`, one query per sample, where NVML cannot be loaded."""

    def __init__(self, run: ToolRunner = run_tool) -> None:
        self._run = run
        self._warned = False

    def sample(self, indices: Sequence[int]) -> dict[int, Reading]:
        try:
            rows = parse_csv(self._run(query_argv(TELEMETRY_FIELDS)), TELEMETRY_FIELDS)
        except (BackendUnavailable, ValueError) as exc:
            if not self._warned:
                log.warning("nvidia-smi telemetry failed; ticks carry time only", error=str(exc))
                self._warned = True
            rows = []
        found = {as_int(row["index"]): row for row in rows}
        readings: dict[int, Reading] = {}
        for index in indices:
            row = found.get(index)
            readings[index] = (
                Reading()
                if row is None
                else Reading(
                    utilization_pct=as_int(row["utilization.gpu"]),
                    memory_used_mb=as_int(row["memory.used"]),
                    power_w=as_int(row["power.draw"]),
                    temperature_c=as_int(row["temperature.gpu"]),
                )
            )
        return readings

    def close(self) -> None:
        """Nothing to release."""
