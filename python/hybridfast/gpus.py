"""The machine's GPUs: discovery, health and load through NVML, and the pool that ties local model
servers to them.

NVML comes from `nvidia-ml-py` (the `gpu` extra; imported as `pynvml`). Without it, or without
an NVIDIA driver, the pool is empty and everything else works as before. What is read, per GPU:
utilisation, memory used/total, temperature and uncorrected ECC errors (volatile count) —
in `/metrics`, `/readyz`, and `hybridfast gpus`.

The `gpus:` config pins local model servers (providers) to GPUs:

    gpus:
      devices:
        - {index: 0, providers: [vllm-0]}
        - {index: 1, providers: [vllm-1]}

A GPU is *down* when NVML cannot read it any more, when it reports uncorrected ECC errors, or
when it runs at or above `max_temperature_c`. The deployments of its providers are then left out
of routing (the next replica or the cloud answers: failover), and come back when it recovers.
Among healthy GPUs, a deployment's *load* (utilisation and memory use, 0..1) is added to its
live in-flight load, so a model's replicas balance by GPU load as well as by their queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from hybridfast.metrics import REGISTRY

log = logging.getLogger("hybridfast.gpus")


@dataclass(frozen=True, slots=True)
class GpuStatus:
    index: int
    name: str
    uuid: str
    utilization: float  # 0..1, the GPU's busy fraction over NVML's last sample period
    memory_used: int  # bytes
    memory_total: int  # bytes
    temperature_c: int
    ecc_uncorrected: int | None  # volatile count; None where ECC is off or unsupported
    healthy: bool
    problem: str = ""  # why it is not healthy

    @property
    def load(self) -> float:
        """How busy it is, 0..1: the larger of compute utilisation and memory use."""
        memory = self.memory_used / self.memory_total if self.memory_total else 0.0
        return max(self.utilization, memory)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "load": round(self.load, 3)}


def load_nvml() -> ModuleType | None:
    """NVML's Python binding, initialised; None without the package or a driver."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # pynvml.NVMLError: no driver, no device, no permission
        log.debug("NVML is not available: %s", exc)
        return None
    module: ModuleType = pynvml
    return module


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ecc_uncorrected(nvml: ModuleType, handle: Any) -> int | None:
    try:
        return int(
            nvml.nvmlDeviceGetTotalEccErrors(
                handle, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC
            )
        )
    except Exception:  # ECC disabled or not supported on this board
        return None


def read_gpu(nvml: ModuleType, index: int, max_temperature_c: int) -> GpuStatus:
    """One GPU's status; a GPU NVML cannot read is reported down, not raised."""
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        rates = nvml.nvmlDeviceGetUtilizationRates(handle)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        temperature = int(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        name = _text(nvml.nvmlDeviceGetName(handle))
        uuid = _text(nvml.nvmlDeviceGetUUID(handle))
    except Exception as exc:
        return GpuStatus(index, "?", "?", 0.0, 0, 0, 0, None, False, f"NVML: {exc}")
    ecc = _ecc_uncorrected(nvml, handle)
    problem = ""
    if ecc:
        problem = f"{ecc} uncorrected ECC errors"
    elif temperature >= max_temperature_c:
        problem = f"{temperature} °C (limit {max_temperature_c} °C)"
    return GpuStatus(
        index,
        name,
        uuid,
        float(rates.gpu) / 100.0,
        int(memory.used),
        int(memory.total),
        temperature,
        ecc,
        not problem,
        problem,
    )


def read_gpus(nvml: ModuleType | None, max_temperature_c: int = 90) -> list[GpuStatus]:
    if nvml is None:
        return []
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except Exception as exc:
        log.warning("NVML could not count the GPUs: %s", exc)
        return []
    return [read_gpu(nvml, i, max_temperature_c) for i in range(count)]


class GpuPool:
    """The latest status of every GPU, and what it means for the deployments pinned to them.

    `refresh()` reads NVML (a few hundred microseconds per GPU, in a worker thread when called
    from `run`); routing asks `down()` and `load_of()` between refreshes, which read a dict.
    """

    def __init__(
        self,
        nvml: ModuleType | None,
        affinity: Mapping[str, int],
        *,
        max_temperature_c: int = 90,
    ) -> None:
        self.nvml = nvml
        self.affinity = dict(affinity)  # provider name -> GPU index
        self.max_temperature_c = max_temperature_c
        self.gpus: dict[int, GpuStatus] = {}
        _POOLS.add(self)

    def refresh(self) -> list[GpuStatus]:
        statuses = read_gpus(self.nvml, self.max_temperature_c)
        previous = self.gpus
        self.gpus = {g.index: g for g in statuses}
        for gpu in statuses:
            was = previous.get(gpu.index)
            if was is not None and was.healthy != gpu.healthy:
                if gpu.healthy:
                    log.warning("GPU %d is healthy again", gpu.index)
                else:
                    log.error("GPU %d is down: %s", gpu.index, gpu.problem)
        for index in self.affinity.values():
            if index not in self.gpus and index in previous:
                log.error("GPU %d disappeared", index)
        return statuses

    def _gpu_of(self, provider: str) -> GpuStatus | None:
        index = self.affinity.get(provider)
        return None if index is None else self.gpus.get(index)

    def down(self, provider: str) -> str:
        """Why the provider's GPU cannot serve now; "" when it can (or it has no GPU)."""
        index = self.affinity.get(provider)
        if index is None:
            return ""
        gpu = self.gpus.get(index)
        if gpu is None:
            return f"GPU {index} is not visible"
        return "" if gpu.healthy else f"GPU {index}: {gpu.problem}"

    def load_of(self, provider: str) -> float:
        """The provider's GPU load, 0..1 (0 when it has no GPU or the GPU is not visible)."""
        gpu = self._gpu_of(provider)
        return gpu.load if gpu is not None else 0.0

    def least_loaded(self) -> int | None:
        """The healthy GPU with the lowest load (for the local embedding model), if any."""
        healthy = [g for g in self.gpus.values() if g.healthy]
        return min(healthy, key=lambda g: (g.load, g.index)).index if healthy else None

    def summary(self) -> list[dict[str, Any]]:
        return [g.as_dict() for g in sorted(self.gpus.values(), key=lambda g: g.index)]

    async def run(self, interval_s: float) -> None:
        """Refreshes every `interval_s` until cancelled."""
        while True:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.refresh)
            await asyncio.sleep(interval_s)

    def metrics(self) -> Iterator[tuple[str, str, dict[str, str], float]]:
        """(family, help, labels, value) for every GPU reading, for the metrics collector."""
        for gpu in self.gpus.values():
            labels = {"gpu": str(gpu.index), "name": gpu.name}
            yield "hybridfast_gpu_up", "1 when the GPU can serve.", labels, float(gpu.healthy)
            yield (
                "hybridfast_gpu_utilization_ratio",
                "GPU busy fraction (NVML).",
                labels,
                gpu.utilization,
            )
            yield (
                "hybridfast_gpu_memory_used_bytes",
                "GPU memory in use.",
                labels,
                float(gpu.memory_used),
            )
            yield (
                "hybridfast_gpu_memory_total_bytes",
                "GPU memory in all.",
                labels,
                float(gpu.memory_total),
            )
            yield (
                "hybridfast_gpu_temperature_celsius",
                "GPU temperature.",
                labels,
                float(gpu.temperature_c),
            )
            if gpu.ecc_uncorrected is not None:
                yield (
                    "hybridfast_gpu_ecc_uncorrected_errors",
                    "Uncorrected ECC errors since the driver loaded (volatile).",
                    labels,
                    float(gpu.ecc_uncorrected),
                )


def apply_to_router(
    pool: GpuPool,
    deployments: Iterable[tuple[str, str]],
    set_hardware: Callable[[str, float | None], None],
) -> None:
    """Tells the router each pinned deployment's GPU state: its load, or None when down.
    `deployments` are (deployment id, provider name) pairs."""
    for deployment_id, provider in deployments:
        if provider in pool.affinity:
            set_hardware(deployment_id, None if pool.down(provider) else pool.load_of(provider))


# Every live pool's readings, exported at scrape time (one `hybridfast_gpu_*` family each).
_POOLS: weakref.WeakSet[GpuPool] = weakref.WeakSet()


class _GpuCollector:
    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for pool in list(_POOLS):
            for name, doc, labels, value in pool.metrics():
                family = families.get(name)
                if family is None:
                    family = families[name] = GaugeMetricFamily(name, doc, labels=["gpu", "name"])
                family.add_metric([labels["gpu"], labels["name"]], value)
        yield from families.values()


REGISTRY.register(_GpuCollector())
