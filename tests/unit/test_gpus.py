"""The GPU pool over a fake NVML: discovery, health, failover and balancing through the router."""

from __future__ import annotations

import json

import pytest

from hybridfast import gpus as gpus_module
from hybridfast._core import DeploymentSpec, RouterCore
from hybridfast.cli import main
from hybridfast.gpus import GpuPool, apply_to_router, read_gpus
from tests.fakes.nvml import FakeGpu, FakeNvml


def test_no_nvml_means_no_gpus() -> None:
    assert read_gpus(None) == []
    pool = GpuPool(None, {"vllm-0": 0})
    assert pool.refresh() == []
    assert pool.down("vllm-0") == "GPU 0 is not visible"
    assert pool.down("cloud") == ""


def test_reads_utilisation_memory_temperature_and_ecc() -> None:
    nvml = FakeNvml(
        [
            FakeGpu(utilization=35, memory_used=70 * 2**30, memory_total=140 * 2**30),
            FakeGpu(temperature=95),
            FakeGpu(ecc_uncorrected=3),
            FakeGpu(ecc_uncorrected=None, lost=True),
        ]
    )
    g0, g1, g2, g3 = read_gpus(nvml, max_temperature_c=90)
    assert (g0.utilization, g0.load, g0.healthy) == (0.35, 0.5, True)
    assert (g1.healthy, g1.problem) == (False, "95 °C (limit 90 °C)")
    assert (g2.healthy, g2.problem) == (False, "3 uncorrected ECC errors")
    assert not g3.healthy
    assert g3.problem.startswith("NVML:")


def two_replicas() -> tuple[RouterCore, list[tuple[str, str]]]:
    specs = [DeploymentSpec(f"llama#{i}", "llama", local=True) for i in range(2)]
    core = RouterCore(specs, [], ["a", "b"], group_strategy="least-busy")
    return core, [("llama#0", "vllm-0"), ("llama#1", "vllm-1")]


def test_replicas_balance_by_gpu_load_and_fail_over_when_a_gpu_dies() -> None:
    nvml = FakeNvml([FakeGpu(utilization=90), FakeGpu(utilization=10)])
    pool = GpuPool(nvml, {"vllm-0": 0, "vllm-1": 1})
    core, deployments = two_replicas()

    def first() -> list[str]:
        plan = core.plan("llama")
        assert plan is not None
        return list(plan[0])

    pool.refresh()
    apply_to_router(pool, deployments, core.set_hardware)
    assert first() == ["b", "a"]  # the less busy GPU's replica first
    nvml.gpus[1].lost = True  # GPU 1 falls off the bus
    pool.refresh()
    apply_to_router(pool, deployments, core.set_hardware)
    assert first() == ["a"]  # failover to the other replica
    nvml.gpus[1].lost = False
    nvml.gpus[1].utilization = 0
    pool.refresh()
    apply_to_router(pool, deployments, core.set_hardware)
    assert first() == ["b", "a"]  # and back when it recovers
    assert pool.least_loaded() == 1


def test_gpus_command_prints_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    nvml = FakeNvml([FakeGpu(utilization=50), FakeGpu(ecc_uncorrected=1)])
    monkeypatch.setattr(gpus_module, "load_nvml", lambda: nvml)
    monkeypatch.setattr("hybridfast.cli.gpus.load_nvml", lambda: nvml)
    monkeypatch.delenv("HYBRIDFAST_CONFIG", raising=False)
    monkeypatch.chdir(str(tmp_path))
    assert main(["gpus", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["nvml"] is True
    assert [g["healthy"] for g in out["gpus"]] == [True, False]
    assert out["gpus"][0]["utilization"] == 0.5


def test_gpus_command_without_nvml_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    monkeypatch.setattr("hybridfast.cli.gpus.load_nvml", lambda: None)
    monkeypatch.delenv("HYBRIDFAST_CONFIG", raising=False)
    monkeypatch.chdir(str(tmp_path))
    assert main(["gpus"]) == 0
    assert "no NVML" in capsys.readouterr().out


def test_gpu_readings_reach_metrics() -> None:
    from prometheus_client import generate_latest

    from hybridfast.metrics import REGISTRY

    pool = GpuPool(FakeNvml([FakeGpu(utilization=42, temperature=55)]), {})
    pool.refresh()
    text = generate_latest(REGISTRY).decode()
    assert 'hybridfast_gpu_utilization_ratio{gpu="0",name="NVIDIA H200"} 0.42' in text
    assert 'hybridfast_gpu_temperature_celsius{gpu="0",name="NVIDIA H200"} 55.0' in text
    assert 'hybridfast_gpu_up{gpu="0",name="NVIDIA H200"} 1.0' in text
