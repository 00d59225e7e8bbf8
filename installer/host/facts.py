"""What preflight needs to know about the host, gathered once into plain text and numbers.

Checks are pure functions of `HostFacts`, so tests feed recorded `nvidia-smi` outputs of a GB10,
an H100 and a machine without a GPU (tests/installer/fixtures/nvidia-smi/) through the same
parsers that read the live command here.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

NVIDIA_QUERY = ["--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv"]
# Where podman looks for Container Device Interface specs (the NVIDIA toolkit writes them there).
CDI_SPEC_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))
_UNSUPPORTED = {"[n/a]", "n/a", "[not supported]", "not supported", ""}
_CUDA = re.compile(r"CUDA Version:\s*([0-9.]+)")


@dataclass(frozen=True)
class Gpu:
    name: str
    driver: str
    memory_bytes: int | None  # None on unified memory (GB10 reports "Not Supported"/N/A)
    compute_capability: str


@dataclass
class HostFacts:
    machine: str
    os_release: dict[str, str]
    mem_total_bytes: int
    gpus: list[Gpu] = field(default_factory=list)
    cuda_version: str | None = None
    nvidia_error: str | None = None  # why nvidia-smi gave nothing usable
    ntp_synchronized: str | None = None  # "yes" / "no" / None when unknown
    tools: dict[str, str | None] = field(default_factory=dict)  # name -> path or None
    # docker/podman found but not usable (no daemon, no permission): name -> first error line
    tool_errors: dict[str, str] = field(default_factory=dict)
    # CDI specifications that declare NVIDIA GPUs (kind nvidia.com/gpu), where podman reads them
    nvidia_cdi_specs: list[str] = field(default_factory=list)


def parse_os_release(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"')
    return values


def parse_meminfo(text: str) -> int:
    match = re.search(r"^MemTotal:\s+(\d+)\s+kB", text, re.MULTILINE)
    if not match:
        raise ValueError("no MemTotal line in /proc/meminfo")
    return int(match.group(1)) * 1024


def _memory(value: str) -> int | None:
    cleaned = value.strip()
    if cleaned.lower() in _UNSUPPORTED:
        return None
    number, _, unit = cleaned.partition(" ")
    scale = {"MiB": 1024**2, "GiB": 1024**3}.get(unit.strip(), 1024**2)
    return int(float(number) * scale)


def parse_nvidia_query(text: str) -> list[Gpu]:
    """Rows of `nvidia-smi --query-gpu=<NVIDIA_QUERY fields> --format=csv` (header optional)."""
    gpus = []
    lines = [line for line in text.splitlines() if line.strip()]
    for line in lines[1:] if lines and lines[0].lower().startswith("name") else lines:
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 4:
            raise ValueError(f"unexpected nvidia-smi row: {line!r}")
        name, driver, memory, capability = parts
        gpus.append(Gpu(name, driver, _memory(memory), capability))
    return gpus


def parse_cuda_version(banner: str) -> str | None:
    match = _CUDA.search(banner)
    return match.group(1) if match else None


def _run(argv: list[str]) -> tuple[int, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return done.returncode, done.stdout + done.stderr


def apply_nvidia_outputs(facts: HostFacts, query: tuple[int, str], banner: tuple[int, str]) -> None:
    """Fill GPU facts from (returncode, output) of the query and of plain `nvidia-smi`."""
    rc, text = query
    if rc != 0:
        facts.nvidia_error = text.strip().splitlines()[0] if text.strip() else f"exit {rc}"
        return
    facts.gpus = parse_nvidia_query(text)
    facts.cuda_version = parse_cuda_version(banner[1]) if banner[0] == 0 else None


def collect_host_facts() -> HostFacts:
    """Read this machine: os-release, meminfo, nvidia-smi, timedatectl and the container tools."""
    os_release = Path("/etc/os-release")
    facts = HostFacts(
        machine=platform.machine(),
        os_release=parse_os_release(os_release.read_text()) if os_release.is_file() else {},
        mem_total_bytes=parse_meminfo(Path("/proc/meminfo").read_text()),
    )
    smi = shutil.which("nvidia-smi")
    if smi is None:
        facts.nvidia_error = "nvidia-smi not found"
    else:
        apply_nvidia_outputs(facts, _run([smi, *NVIDIA_QUERY]), _run([smi]))
    if shutil.which("timedatectl"):
        rc, out = _run(["timedatectl", "show", "--property=NTPSynchronized", "--value"])
        facts.ntp_synchronized = out.strip() if rc == 0 and out.strip() in ("yes", "no") else None
    for tool in ("docker", "podman", "nvidia-ctk", "nvidia-container-runtime"):
        facts.tools[tool] = shutil.which(tool)
    facts.nvidia_cdi_specs = nvidia_cdi_specs()
    for engine in ("docker", "podman"):
        path = facts.tools[engine]
        if path is not None:
            rc, out = _run([path, "info"])
            if rc != 0:
                lines = (
                    [
                        line
                        for line in out.splitlines()
                        if "error" in line.lower() or "cannot" in line.lower()
                    ]
                    or out.splitlines()
                    or [f"exit {rc}"]
                )
                facts.tool_errors[engine] = lines[0].strip()
    return facts


def nvidia_cdi_specs(directories: tuple[Path, ...] = CDI_SPEC_DIRS) -> list[str]:
    """CDI spec files (JSON or YAML) whose kind is nvidia.com/gpu."""
    found = []
    for directory in directories:
        for spec in sorted(directory.glob("*.json")) + sorted(directory.glob("*.yaml")):
            try:
                text = spec.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if re.search(r"""["']?kind["']?\s*:\s*["']?nvidia\.com/gpu\b""", text):
                found.append(str(spec))
    return found


def box_memory_bytes(facts: HostFacts | None = None) -> int:
    """Memory the engine can use: the GPU's own, or system memory on unified-memory boxes."""
    facts = facts or collect_host_facts()
    if facts.gpus and facts.gpus[0].memory_bytes is not None:
        return facts.gpus[0].memory_bytes
    return facts.mem_total_bytes
