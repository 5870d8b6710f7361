"""Hardware checks of `hybridfast harden`: GPU ECC (NVML), memory ECC (EDAC counters, DMI) and
what can and cannot be known about rowhammer mitigations."""

from __future__ import annotations

import re
from typing import Any

from hybridfast.security.harden import Probe, Result, Status

# NVML constants (nvml.h), so a fake module need not define them all.
_UNCORRECTED, _CORRECTED = 1, 0
_VOLATILE = 0


def _gpu_line(nvml: Any, index: int) -> tuple[Status, str]:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = nvml.nvmlDeviceGetName(handle)
    name = name.decode() if isinstance(name, bytes) else str(name)
    mode: str
    try:
        current, _pending = nvml.nvmlDeviceGetEccMode(handle)
        mode = "on" if current else "off"
    except Exception:  # NVMLError_NotSupported (consumer GPUs) or an old driver
        mode = "not supported"
    try:
        errors = int(nvml.nvmlDeviceGetTotalEccErrors(handle, _UNCORRECTED, _VOLATILE))
    except Exception:
        errors = -1
    counted = str(errors) if errors >= 0 else "not readable"
    line = f"GPU {index} {name}: ECC {mode}, uncorrected errors since boot: {counted}"
    if errors > 0:
        return "fail", line
    if mode == "on":
        return ("pass" if errors == 0 else "unknown"), line
    if mode == "off":
        return "warn", line
    return "unknown", line


def check_gpu_ecc(probe: Probe) -> Result:
    title = "GPU ECC mode and errors (NVML)"
    nvml = probe.nvml()
    if nvml is None:
        return Result(
            "gpu_ecc",
            title,
            "unknown",
            "NVML is not available",
            ["nvidia-ml-py is not installed (pip install 'hybridfast[gpu]')"],
        )
    try:
        nvml.nvmlInit()
        count = int(nvml.nvmlDeviceGetCount())
    except Exception as exc:
        return Result("gpu_ecc", title, "unknown", "NVML did not start", [f"nvmlInit: {exc}"])
    if count == 0:
        return Result(
            "gpu_ecc", title, "pass", "no NVIDIA GPU: nothing to check", ["NVML sees 0 devices"]
        )
    order = {"fail": 3, "warn": 2, "unknown": 1, "pass": 0}
    worst: Status = "pass"
    evidence = []
    for index in range(count):
        try:
            status, line = _gpu_line(nvml, index)
        except Exception as exc:
            status, line = "fail", f"GPU {index}: NVML cannot reach it ({exc})"
        evidence.append(line)
        if order[status] > order[worst]:
            worst = status
    summary = {
        "pass": f"ECC on and clean on {count} GPUs",
        "warn": "ECC is off on some GPUs",
        "fail": "uncorrected memory errors or a lost GPU",
        "unknown": "ECC state not readable on some GPUs",
    }[worst]
    return Result("gpu_ecc", title, worst, summary, evidence)


def _edac(probe: Probe) -> tuple[list[str], int, int] | None:
    """(evidence, corrected, uncorrected) from the EDAC memory controllers, if any."""
    base = probe.path("/sys/devices/system/edac/mc")
    controllers = sorted(base.glob("mc[0-9]*")) if base.is_dir() else []
    if not controllers:
        return None
    evidence: list[str] = []
    ce = ue = 0
    for mc in controllers:
        try:
            c = int((mc / "ce_count").read_text().strip())
            u = int((mc / "ue_count").read_text().strip())
        except (OSError, ValueError):
            evidence.append(f"{mc.name}: counters unreadable")
            continue
        ce, ue = ce + c, ue + u
        modes = sorted({p.read_text().strip() for p in mc.glob("dimm*/dimm_edac_mode")})
        evidence.append(
            f"EDAC {mc.name}: corrected {c}, uncorrected {u}"
            + (f", mode {'/'.join(modes)}" if modes else "")
        )
    return evidence, ce, ue


def _dmi_memory(probe: Probe) -> tuple[str | None, list[str]]:
    """(error correction type, memory types) from `dmidecode -t memory`, if readable."""
    answer = probe.run(["dmidecode", "-t", "memory"])
    if answer is None or answer[0] != 0:
        return None, []
    ecc = re.search(r"Error Correction Type:\s*(.+)", answer[1])
    types = sorted(
        set(re.findall(r"^\s*Type:\s*(DDR\w*|LPDDR\w*|HBM\w*)", answer[1], re.MULTILINE))
    )
    return (ecc.group(1).strip() if ecc else None), types


def check_memory_ecc(probe: Probe) -> Result:
    title = "Memory ECC (EDAC counters, DMI)"
    edac = _edac(probe)
    ecc_type, types = _dmi_memory(probe)
    dmi = (
        f"DMI: error correction {ecc_type}, memory {', '.join(types) or 'type not listed'}"
        if ecc_type
        else "DMI: not readable (dmidecode absent or not root)"
    )
    if edac is not None:
        evidence, ce, ue = edac
        evidence.append(dmi)
        if ue:
            return Result("memory_ecc", title, "fail", f"{ue} uncorrected memory errors", evidence)
        if ce:
            return Result(
                "memory_ecc",
                title,
                "warn",
                f"ECC active; {ce} corrected errors (a DIMM may be failing)",
                evidence,
            )
        return Result("memory_ecc", title, "pass", "ECC active, no errors", evidence)
    evidence = ["/sys/devices/system/edac/mc: no memory controller registered", dmi]
    if ecc_type is None:
        return Result(
            "memory_ecc", title, "unknown", "ECC state not exposed to this user", evidence
        )
    if ecc_type.lower() in ("none", "unknown"):
        return Result(
            "memory_ecc", title, "warn", "memory without ECC: bit flips go undetected", evidence
        )
    return Result(
        "memory_ecc",
        title,
        "unknown",
        f"DMI reports {ecc_type}, but no EDAC driver counts errors",
        evidence,
    )


def check_rowhammer(probe: Probe) -> Result:
    title = "Rowhammer mitigations"
    ecc_type, types = _dmi_memory(probe)
    edac = _edac(probe)
    evidence = [
        "TRR/RFM state lives in the DRAM and its controller; no interface shows it to software",
        f"memory types (DMI): {', '.join(types) if types else 'not readable'}",
        f"ECC: {'EDAC active' if edac else ecc_type or 'not readable'}",
    ]
    if edac is None and ecc_type is not None and ecc_type.lower() in ("none", "unknown"):
        return Result(
            "rowhammer",
            title,
            "warn",
            "no ECC to catch flipped bits; TRR cannot be verified",
            evidence,
        )
    return Result(
        "rowhammer",
        title,
        "unknown",
        "cannot be verified from software (ECC noted above)",
        evidence,
    )
