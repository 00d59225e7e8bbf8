"""Preflight checks against recorded nvidia-smi outputs and this machine's real state."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.appliance.layout import Layout
from installer.host.facts import (
    HostFacts,
    apply_nvidia_outputs,
    box_memory_bytes,
    collect_host_facts,
    parse_nvidia_query,
)
from installer.host.kvcache import GIB
from installer.host.preflight import (
    FAIL,
    PASS,
    WARN,
    BundleNeeds,
    check_port,
    run_preflight,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "nvidia-smi"
UBUNTU = {"ID": "ubuntu", "VERSION_ID": "24.04", "PRETTY_NAME": "Ubuntu 24.04.3 LTS"}
GEMMA_CUDA = BundleNeeds("aarch64", "cuda", "wheelhouse", 18 * GIB, 1 * GIB, 10**6)
# What the Spark specs' manifests say: CUDA 13.0, kernels for sm 12.1 (GB10).
SPARK = BundleNeeds("aarch64", "cuda", "wheelhouse", 18 * GIB, GIB, 0, cuda="13.0", sm="12.1")


def facts_for(machine: str, query: str | None, banner: str | None, memory_gib: int) -> HostFacts:
    facts = HostFacts(
        machine=machine,
        os_release=dict(UBUNTU),
        mem_total_bytes=memory_gib * GIB,
        ntp_synchronized="yes",
    )
    if query is None:
        apply_nvidia_outputs(facts, (9, (FIXTURES / "no-driver.txt").read_text()), (9, ""))
    else:
        apply_nvidia_outputs(
            facts,
            (0, (FIXTURES / query).read_text()),
            (0, (FIXTURES / banner).read_text() if banner else ""),
        )
    return facts


def by_name(report, name: str):
    return next(check for check in report.checks if check.name == name)


def test_gb10_passes_with_unified_memory(tmp_path: Path) -> None:
    facts = facts_for("aarch64", "gb10-query.csv", "gb10-banner.txt", 119)
    assert facts.gpus[0].memory_bytes is None  # "[N/A]" on unified memory
    report = run_preflight(facts, GEMMA_CUDA, Layout.at(tmp_path), {})
    assert by_name(report, "compute capability").status == PASS
    assert by_name(report, "cuda").value == "13.0"
    memory = by_name(report, "memory")
    assert memory.status == PASS and "unified/system memory" in memory.value
    assert by_name(report, "architecture").status == PASS
    assert box_memory_bytes(facts) == 119 * GIB


def test_a_spark_bundle_on_a_gb10_passes_driver_cuda_and_sm(tmp_path: Path) -> None:
    facts = facts_for("aarch64", "gb10-query.csv", "gb10-banner.txt", 119)
    report = run_preflight(facts, SPARK, Layout.at(tmp_path), {})
    driver = by_name(report, "nvidia driver")
    assert driver.status == PASS and "580.95.05" in driver.value and "580.65.06" in driver.value
    assert by_name(report, "cuda").status == PASS
    assert by_name(report, "compute capability").status == PASS
    assert report.ok


def test_a_spark_bundle_is_refused_on_another_gpu_with_a_remedy_each(tmp_path: Path) -> None:
    facts = facts_for("aarch64", "h100-query.csv", "h100-banner.txt", 2000)
    report = run_preflight(facts, SPARK, Layout.at(tmp_path), {})
    driver, cuda = by_name(report, "nvidia driver"), by_name(report, "cuda")
    capability = by_name(report, "compute capability")
    assert driver.status == FAIL and "older than 580.65.06" in driver.value
    assert "580.65.06 or newer" in driver.remedy
    assert cuda.status == FAIL and cuda.value == "host 12.8, bundle 13.0"
    assert "CUDA 13.0" in cuda.remedy and "built for CUDA 12.8" in cuda.remedy
    assert capability.status == FAIL and "bundle built for sm 12.1" in capability.value
    assert "use a bundle built for sm 9.0" in capability.remedy
    assert {"nvidia driver", "cuda", "compute capability"} <= {c.name for c in report.blocking}


def test_a_gb10_with_an_older_driver_is_told_to_update_it(tmp_path: Path) -> None:
    facts = facts_for("aarch64", "gb10-r575-query.csv", "gb10-r575-banner.txt", 119)
    report = run_preflight(facts, SPARK, Layout.at(tmp_path), {})
    assert by_name(report, "nvidia driver").status == FAIL
    assert by_name(report, "cuda").status == FAIL
    assert by_name(report, "compute capability").status == PASS  # the right GPU, old driver
    assert not report.ok


def test_podman_finds_the_gpu_through_a_cdi_spec(tmp_path: Path) -> None:
    from installer.host.facts import nvidia_cdi_specs

    spec_dir = tmp_path / "cdi"
    spec_dir.mkdir()
    (spec_dir / "other.json").write_text('{"cdiVersion": "0.5.0", "kind": "vendor.com/fpga"}')
    assert nvidia_cdi_specs((spec_dir,)) == []
    nvidia = spec_dir / "nvidia.yaml"
    nvidia.write_text("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: []\n")
    assert nvidia_cdi_specs((spec_dir,)) == [str(nvidia)]
    facts = facts_for("aarch64", "gb10-query.csv", "gb10-banner.txt", 119)
    needs = BundleNeeds("aarch64", "cuda", "container", 18 * GIB, 8 * GIB, 0)
    facts.tools = {"podman": "/usr/bin/podman"}
    facts.nvidia_cdi_specs = [str(nvidia)]
    assert (
        by_name(
            run_preflight(facts, needs, Layout.at(tmp_path), {}), "nvidia container toolkit"
        ).status
        == PASS
    )
    facts.tools = {"docker": "/usr/bin/docker"}  # docker needs the NVIDIA runtime itself
    assert (
        by_name(
            run_preflight(facts, needs, Layout.at(tmp_path), {}), "nvidia container toolkit"
        ).status
        == FAIL
    )


def test_h100_warns_about_marlin_and_uses_gpu_memory(tmp_path: Path) -> None:
    facts = facts_for("x86_64", "h100-query.csv", "h100-banner.txt", 2000)
    needs = BundleNeeds("x86_64", "cuda", "wheelhouse", 18 * GIB, GIB, 0)
    report = run_preflight(facts, needs, Layout.at(tmp_path), {})
    capability = by_name(report, "compute capability")
    assert capability.status == WARN and "Marlin" in capability.remedy
    assert box_memory_bytes(facts) == 81559 * 1024**2
    assert "GPU memory" in by_name(report, "memory").value
    assert report.ok  # warnings do not block


def test_no_gpu_fails_a_cuda_bundle_but_passes_a_cpu_bundle(tmp_path: Path) -> None:
    facts = facts_for("aarch64", None, None, 119)
    report = run_preflight(facts, GEMMA_CUDA, Layout.at(tmp_path), {})
    gpu = by_name(report, "gpu")
    assert gpu.status == FAIL and "couldn't communicate" in gpu.value
    assert not report.ok
    cpu = BundleNeeds("aarch64", "cpu", "wheelhouse", 10**6, 10**8, 0)
    assert run_preflight(facts, cpu, Layout.at(tmp_path), {}).ok


def test_wrong_architecture_and_small_memory_fail(tmp_path: Path) -> None:
    facts = facts_for("x86_64", "gb10-query.csv", "gb10-banner.txt", 16)
    report = run_preflight(facts, GEMMA_CUDA, Layout.at(tmp_path), {})
    assert by_name(report, "architecture").status == FAIL
    assert by_name(report, "memory").status == FAIL
    assert {c.name for c in report.blocking} >= {"architecture", "memory"}


def test_container_runtime_needs_an_engine_and_the_toolkit(tmp_path: Path) -> None:
    facts = facts_for("aarch64", "gb10-query.csv", "gb10-banner.txt", 119)
    needs = BundleNeeds("aarch64", "cuda", "container", 18 * GIB, 8 * GIB, 0)
    facts.tools = {"podman": None, "docker": None, "nvidia-ctk": None}
    report = run_preflight(facts, needs, Layout.at(tmp_path), {})
    assert by_name(report, "container runtime").status == FAIL
    assert by_name(report, "nvidia container toolkit").status == FAIL
    facts.tools = {"podman": "/usr/bin/podman", "nvidia-ctk": "/usr/bin/nvidia-ctk"}
    report = run_preflight(facts, needs, Layout.at(tmp_path), {})
    assert by_name(report, "container runtime").status == PASS
    facts.tools = {"docker": "/usr/bin/docker", "nvidia-ctk": "/usr/bin/nvidia-ctk"}
    facts.tool_errors = {"docker": "Cannot connect to the Docker daemon"}
    runtime = by_name(run_preflight(facts, needs, Layout.at(tmp_path), {}), "container runtime")
    assert runtime.status == FAIL and "Cannot connect" in runtime.value


def test_container_runtime_is_the_one_the_site_configured(tmp_path: Path) -> None:
    """The unit runs `sparkplane_container_engine`: the other one being there does not do."""
    facts = facts_for("aarch64", "gb10-query.csv", "gb10-banner.txt", 119)
    needs = BundleNeeds("aarch64", "cuda", "container", 18 * GIB, 8 * GIB, 0)
    facts.tools = {"podman": "/usr/bin/podman", "nvidia-ctk": "/usr/bin/nvidia-ctk"}
    layout = Layout.at(tmp_path)
    runtime = by_name(run_preflight(facts, needs, layout, {}, "docker"), "container runtime")
    assert runtime.status == FAIL
    assert runtime.remedy == "install docker (sparkplane_container_engine)"
    runtime = by_name(run_preflight(facts, needs, layout, {}, "podman"), "container runtime")
    assert (runtime.status, runtime.value) == (PASS, "podman")


def test_disk_check_fails_when_the_bundle_cannot_fit(tmp_path: Path) -> None:
    facts = facts_for("aarch64", "gb10-query.csv", "gb10-banner.txt", 119)
    huge = BundleNeeds("aarch64", "cuda", "wheelhouse", 10**15, GIB, 0)
    disk = by_name(run_preflight(facts, huge, Layout.at(tmp_path), {}), "disk")
    assert disk.status == FAIL and "GiB free" in disk.value


def test_clock_not_synchronized_is_a_warning(tmp_path: Path) -> None:
    facts = facts_for("aarch64", "gb10-query.csv", "gb10-banner.txt", 119)
    facts.ntp_synchronized = "no"
    check = by_name(run_preflight(facts, GEMMA_CUDA, Layout.at(tmp_path), {}), "clock sync")
    assert check.status == WARN and "audit" in check.remedy


def test_port_in_use_is_reported() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert check_port(port, "engine").status == WARN
    assert check_port(port, "engine").status == PASS


def test_malformed_nvidia_output_is_an_error() -> None:
    with pytest.raises(ValueError, match="unexpected nvidia-smi row"):
        parse_nvidia_query("name, driver_version\nNVIDIA GB10, 580\n")


def test_this_machine_collects_real_facts() -> None:
    facts = collect_host_facts()
    assert facts.mem_total_bytes > GIB
    assert facts.machine in ("x86_64", "aarch64")


def test_cli_prints_json_for_a_cpu_bundle(tmp_path: Path) -> None:
    from controlplane.core import signing
    from tests.installer.fixtures.bundles import make_bundle

    signing.generate_keypair(tmp_path / "k")
    bundle = make_bundle(tmp_path / "bundle", tmp_path / "k/bundle.key")
    sparkplane = str(Path(sys.executable).parent / "sparkplane")
    done = subprocess.run(
        [sparkplane, "preflight", "--bundle", str(bundle), "--root", str(tmp_path / "r"), "--json"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    names = {check["name"] for check in report["checks"]}
    assert {"os", "architecture", "gpu", "memory", "disk", "clock sync"} <= names
    assert not (tmp_path / "r").exists()


def test_install_of_a_container_bundle_without_podman_stops_at_preflight(tmp_path: Path) -> None:
    import shutil as _shutil

    from controlplane.core import signing
    from installer.provision.install import InstallError, install
    from tests.installer.fixtures.bundles import make_bundle

    if _shutil.which("nvidia-ctk"):
        pytest.skip("the NVIDIA container toolkit is installed here")
    signing.generate_keypair(tmp_path / "k")
    bundle = make_bundle(tmp_path / "bundle", tmp_path / "k/bundle.key", runtime="container")
    with pytest.raises(InstallError, match="preflight failed") as caught:
        install(bundle, tmp_path / "root", [signing.load_public_key(tmp_path / "k/bundle.pub")])
    details = "\n".join(caught.value.details)
    assert "nvidia container toolkit: not found" in details
    assert not (tmp_path / "root").exists()
