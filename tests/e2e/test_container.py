"""The container runtime, really run: an OCI image in a bundle, loaded by the installer, started
with the engine unit's exact command, serving the tiny Gemma 4 behind the control plane.

The unit stays what a DGX Spark runs (`podman run ... --device nvidia.com/gpu=all ...`); the test
adapts the host instead, all of it inside one network namespace (loopback only) and one private
mount namespace (a tmpfs on /run), so nothing on the shared machine changes:
- a CDI spec that declares nvidia.com/gpu=all (no devices: this host has no GPU) in the private
  /run/cdi, where podman and preflight look;
- containers.conf (CONTAINERS_CONF): runc (crun fails on this machine's cgroups), cgroupfs;
  storage.conf (CONTAINERS_STORAGE_CONF): podman storage in tmp_path, so the install's
  `podman load` really loads the image;
- this sandbox has no CAP_SYS_RESOURCE, so no process here may raise a hard rlimit, while the
  unit asks `--ulimit memlock=-1` and podman 4.3 adds nofile and nproc of 1048576 whenever a
  --ulimit is given: the unit's command runs through a shim (podman_limits_shim.py) that holds
  those three to this host's hard limits and changes nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.appliance.layout import Layout, controlplane_command, read_env_file
from tests.e2e.conftest import REPO, SPARKPLANE, DemoBundle, Installed, sparkplane
from tests.e2e.oci_image import build_engine_image
from tests.installer.fixtures.templates import exec_start

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IMAGE = "localhost/sparkplane-engine-cpu:0.32.0"
PORT = 18090
ENGINE_PORT = 18091
CDI_SPEC = {
    "cdiVersion": "0.5.0",
    "kind": "nvidia.com/gpu",
    "devices": [{"name": "all", "containerEdits": {"env": ["NVIDIA_VISIBLE_DEVICES=void"]}}],
}
CONTAINERS_CONF = """\
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
SPEC = """\
schema: 1
name: sparkplane-demo-container
version: 0.1.0
platform: {arch: x86_64, accelerator: cpu, python: "3.11"}
components:
  - {name: engine, role: engine, runtime: container, image: IMAGE_ARCHIVE, image_ref: IMAGE_REF}
  - {name: sparkplane-demo, role: model, generate: demo, corpus: BUNDLES/demo-corpus.txt,
     trainer: BUNDLES/requirements/engine-cpu.txt, served_model_name: sparkplane-demo}
  - {name: sparkplane-demo-assistant, role: draft_model, generate: demo,
     corpus: BUNDLES/demo-corpus.txt, trainer: BUNDLES/requirements/engine-cpu.txt}
  - {name: controlplane, role: controlplane, project: REPO}
  - {name: playbooks, role: playbooks, source: REPO/playbooks}
  - {name: templates, role: templates, source: REPO/templates}
"""


@dataclass
class Host:
    """One network + mount namespace, held open by a sleeper, that every command enters."""

    sleeper: subprocess.Popen[bytes]
    env: dict[str, str]

    def argv(self, argv: list[str]) -> list[str]:
        return ["nsenter", "--target", str(self.sleeper.pid), "--mount", "--net", "--", *argv]

    def run(self, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # type: ignore[call-overload,no-any-return]
            self.argv(argv), env=self.env, capture_output=True, text=True, check=False, **kwargs
        )

    def popen(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                self.argv(argv), env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    if not shutil.which("podman") or not shutil.which("runc") or not shutil.which("nsenter"):
        pytest.fail("the container test needs podman, runc and nsenter (make host-tools)")
    tmp = tmp_path_factory.mktemp("podman")
    (tmp / "nvidia.json").write_text(json.dumps(CDI_SPEC))
    (tmp / "containers.conf").write_text(CONTAINERS_CONF)
    (tmp / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{tmp}/storage"\nrunroot = "{tmp}/run"\n'
    )
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(tmp / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(tmp / "storage.conf"),
    }
    # unshare, not `ip netns exec`: that remounts /sys and hides the cgroup mounts runc needs.
    setup = (
        f"ip link set lo up && mount -t tmpfs tmpfs /run && mkdir /run/cdi && "
        f"cp {tmp / 'nvidia.json'} /run/cdi/ && exec sleep infinity"
    )
    sleeper = subprocess.Popen(
        ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", setup]
    )
    time.sleep(1)
    assert sleeper.poll() is None, "could not set up the private namespaces"
    host = Host(sleeper, env)
    yield host
    host.run(["podman", "rm", "--all", "--force"])
    host.run(["podman", "system", "reset", "--force"])
    sleeper.kill()
    sleeper.wait()


@pytest.fixture(scope="module")
def container_bundle(
    installed: Installed, demo_bundle: DemoBundle, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The engine image (Debian + the installed engine's site-packages) in a signed bundle."""
    work = tmp_path_factory.mktemp("container-bundle")
    venv = Layout.at(installed.root).current / "engine-venv"
    site = next((venv / "lib").glob("python3*/site-packages"))
    started = time.monotonic()
    archive = build_engine_image(site, IMAGE, work / "image")
    spec = work / "spec.yaml"
    spec.write_text(
        SPEC.replace("IMAGE_ARCHIVE", str(archive))
        .replace("IMAGE_REF", IMAGE)
        .replace("BUNDLES", str(REPO / "offline-bundle"))
        .replace("REPO", str(REPO))
    )
    done = sparkplane("bundle", "build", str(spec), "--key", str(demo_bundle.key),
                      "--out", str(work / "bundle"), check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    archive.unlink()  # the bundle holds its own copy
    print(f"container bundle built in {time.monotonic() - started:.0f} s")
    return work / "bundle"


@pytest.fixture(scope="module")
def appliance(
    host: Host, container_bundle: Path, demo_bundle: DemoBundle, request: pytest.FixtureRequest
) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="spc-", dir="/tmp"))  # short: unix socket paths
    logs = root.parent / f"{root.name}-logs"
    logs.mkdir()
    request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    request.addfinalizer(lambda: shutil.rmtree(logs, ignore_errors=True))
    started = time.monotonic()
    install = host.run(
        [SPARKPLANE, "install", str(container_bundle), "--root", str(root),
         "--trust", str(demo_bundle.pubkey), "--yes", "--profile", "demo",
         "--engine-port", str(ENGINE_PORT), "--port", str(PORT), "--bind", "127.0.0.1"],
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    print(f"container bundle installed in {time.monotonic() - started:.0f} s")
    unit = (Layout.at(root).systemd / "sparkplane-engine.service").read_text()
    engine_argv = exec_start(unit)
    assert engine_argv[:2] == ["/usr/bin/podman", "run"]
    host.run(["podman", "rm", "--force", "sparkplane-engine"])  # the unit's ExecStartPre
    shim = [sys.executable, str(Path(__file__).with_name("podman_limits_shim.py"))]
    engine = host.popen([*shim, *engine_argv], logs / "engine.log")
    try:
        wait_for(host, f"http://127.0.0.1:{ENGINE_PORT}/health", 600, engine, logs / "engine.log")
        print(f"engine in its container healthy {time.monotonic() - started:.0f} s after install")
        controlplane = host.popen(controlplane_command(Layout.at(root)), logs / "cp.log")
        try:
            wait_for(host, f"http://127.0.0.1:{PORT}/readyz", 120, controlplane, logs / "cp.log")
            yield root
        finally:
            os.killpg(controlplane.pid, signal.SIGTERM)
            controlplane.wait(timeout=60)
    finally:
        host.run(["podman", "stop", "--time", "30", "sparkplane-engine"])  # the unit's ExecStop
        engine.wait(timeout=120)


def wait_for(host: Host, url: str, timeout: float, process: subprocess.Popen, log: Path) -> None:
    probe = f"import sys, urllib.request\nurllib.request.urlopen({url!r}, timeout=5)\n"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exited {process.returncode} before {url} answered:\n"
                        f"{log.read_text()[-4000:]}")  # fmt: skip
        if host.run([sys.executable, "-c", probe]).returncode == 0:
            return
        time.sleep(2)
    pytest.fail(f"{url} did not answer in {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def test_the_engine_image_came_from_the_bundle_and_runs_under_podman(
    host: Host, appliance: Path
) -> None:
    images = host.run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"])
    assert IMAGE in images.stdout.split()
    running = host.run(["podman", "ps", "--format", "{{.Names}} {{.Image}}"])
    assert running.stdout.split() == ["sparkplane-engine", IMAGE]
    # The engine in the container reads the model and its draft from the installed store.
    args = [line for line in Layout.at(appliance).engine_args.read_text().splitlines()
            if not line.startswith("#")]  # fmt: skip
    spec = json.loads(args[args.index("--speculative-config") + 1])
    assert spec["model"] == str(Layout.at(appliance).models / "sparkplane-demo-assistant")


def test_a_completion_goes_through_the_control_plane_to_the_container(
    host: Host, appliance: Path
) -> None:
    env = {**os.environ, **read_env_file(Layout.at(appliance).controlplane_env)}
    sparkplane("tenants", "create", "box", "--models", "sparkplane-demo", env=env)
    key = sparkplane("keys", "create", "--tenant", "box", env=env).stdout.splitlines()[-1]
    client = (
        "import json, sys, openai\n"
        f"c = openai.OpenAI(base_url='http://127.0.0.1:{PORT}/v1', api_key=sys.argv[1],"
        " max_retries=0)\n"
        "r = c.chat.completions.create(model='sparkplane-demo', temperature=0, max_tokens=30,"
        " messages=[{'role': 'user', 'content': 'Say hello to the auditors.'}])\n"
        "print(json.dumps(r.model_dump(mode='json')))\n"
    )
    done = host.run([sys.executable, "-c", client, key])
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    (choice,) = answer["choices"]
    assert choice["finish_reason"] == "stop" and choice["message"]["content"]
    assert answer["usage"]["completion_tokens"] > 0 and answer["model"] == "sparkplane-demo"
