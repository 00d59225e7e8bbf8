"""Real ansible-runner installs of a small signed bundle into temp roots."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.appliance.events import read_events
from controlplane.appliance.layout import Layout, engine_command, read_env_file
from controlplane.core import signing
from controlplane.core.config import load_settings
from installer.provision.install import InstallError, InstallResult, install
from tests.installer.fixtures.bundles import make_bundle
from tests.installer.fixtures.cli import run

pytestmark = pytest.mark.slow
SPARKPLANE = str(Path(sys.executable).parent / "sparkplane")


@pytest.fixture(scope="module")
def bundle(keys: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(
        tmp_path_factory.mktemp("b") / "bundle", keys / "bundle.key", flashinfer=True, draft=True
    )


@pytest.fixture(scope="module")
def installed(bundle: Path, keys: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("root")
    key = signing.load_public_key(keys / "bundle.pub")
    first = install(bundle, root, [key], "demo", engine_port=18000, controlplane_port=18080)
    second = install(bundle, root, [key], "demo", engine_port=18000, controlplane_port=18080)
    return root, first, second


def test_install_lays_out_the_appliance_file_system(installed) -> None:
    root, first, _ = installed
    layout = Layout.at(root)
    assert first.changed > 0
    assert os.readlink(layout.current) == "releases/1.0.0"
    assert layout.active_version() == "1.0.0"
    release = layout.release("1.0.0")
    for part in ("playbooks/site.yml", "templates/engine.env.j2", "manifest.json", ".complete"):
        assert (release / part).is_file(), part
    probe = [
        str(release / "engine-venv/bin/python"),
        "-c",
        "import tinyengine; print(tinyengine.VERSION)",
    ]
    assert (
        subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip() == "1.0.0"
    )
    # The control plane came with its dependency, found only through the bundle's --find-links.
    out = subprocess.run(
        [str(release / "controlplane-venv/bin/sparkplane")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "1.0.0"
    model = layout.models / "tiny"
    assert (model / "model.safetensors").read_bytes() == b"weights-v1"
    for path in [model, *model.iterdir()]:
        assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), path
    for unit in ("sparkplane-engine.service", "sparkplane-controlplane.service"):
        assert (layout.systemd / unit).is_file()


def test_the_mtp_draft_is_installed_in_the_model_store(installed, bundle: Path) -> None:
    # Issue 20 (1): the speculative config named the draft inside the bundle, and nothing
    # copied it: the latency engine read the media, a container engine could not see it.
    root, first, _ = installed
    layout = Layout.at(root)
    draft = layout.models / "tiny-draft"
    assert (draft / "model.safetensors").read_bytes() == b"draft-weights-v1"
    for path in [draft, *draft.iterdir()]:
        assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), path
    argv, _ = engine_command(layout)
    spec = json.loads(argv[argv.index("--speculative-config") + 1])
    assert spec == {"model": str(draft), "num_speculative_tokens": first.plan.speculative_tokens}
    assert first.plan.speculative_tokens > 0
    assert not any(str(bundle) in arg for arg in argv), "the engine must not read the bundle"


def test_flashinfer_kernels_ship_with_the_release(installed) -> None:
    root, _, _ = installed
    layout = Layout.at(root)
    _, env = engine_command(layout)
    cubins = Path(env["FLASHINFER_CUBIN_DIR"])
    assert cubins == layout.current / "flashinfer-cache"
    assert (cubins / "cubins/gemm_sm121.cubin").read_bytes() == b"\x7fELF cubin"
    python = str(layout.current / "engine-venv/bin/python")
    subprocess.run([python, "-c", "import tinyflashinfer"], check=True)


def test_second_run_changes_nothing(installed) -> None:
    _, _, second = installed
    assert isinstance(second, InstallResult)
    assert second.changed == 0


def test_engine_environment_closes_the_air_gap(installed) -> None:
    root, _, _ = installed
    layout = Layout.at(root)
    argv, env = engine_command(layout)
    for key in (
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "VLLM_NO_USAGE_STATS",
        "VLLM_DO_NOT_TRACK",
        "DO_NOT_TRACK",
    ):
        assert env[key] == "1", key
    assert env["VLLM_HOST_IP"] == "127.0.0.1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    for key in ("VLLM_CACHE_ROOT", "TMPDIR"):
        assert Path(env[key]).is_relative_to(root), key
        assert Path(env[key]).is_dir()
    assert argv[:3] == [
        str(layout.current / "engine-venv/bin/python"),
        "-m",
        "vllm.entrypoints.openai.api_server",
    ]
    args = argv[3:]
    assert args[args.index("--model") + 1] == str(layout.models / "tiny")
    assert args[args.index("--served-model-name") + 1] == "tiny-chat"
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert args[args.index("--port") + 1] == "18000"
    assert args[args.index("--max-model-len") + 1] == "512"
    assert args[args.index("--dtype") + 1] == "float32"
    assert "--enforce-eager" in args


def test_controlplane_settings_point_at_the_engine(installed) -> None:
    root, _, _ = installed
    env = read_env_file(Layout.at(root).controlplane_env)
    assert env["SPARKPLANE_DATA_DIR"] == str(Layout.at(root).controlplane_data)
    assert env["SPARKPLANE_ENGINE_URLS"] == "http://127.0.0.1:18000/v1"
    assert env["SPARKPLANE_ENGINE_CAPACITY"] == "8"
    assert env["SPARKPLANE_ENGINE_QUEUE"] == "2"  # served by priority: the engine's flag
    assert "--scheduling-policy\npriority" in Layout.at(root).engine_args.read_text()
    assert env["SPARKPLANE_PORT"] == "18080"
    # The service reads this file as its --config, which refuses unknown keys: load it so.
    settings = load_settings(Layout.at(root).controlplane_env)
    assert settings.appliance_root == Layout.at(root).root  # the console's System page
    assert settings.data_dir == Layout.at(root).controlplane_data


def test_units_pass_systemd_analyze_verify(installed) -> None:
    root, _, _ = installed
    units = [
        str(Layout.at(root).systemd / name)
        for name in ("sparkplane-engine.service", "sparkplane-controlplane.service")
    ]
    done = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "sparkplane" not in done.stderr, done.stderr


def test_lifecycle_events_are_recorded(installed) -> None:
    root, _, _ = installed
    events = read_events(Layout.at(root))
    phases = [(e["kind"], e["phase"]) for e in events]
    assert (
        phases
        == [
            ("installer.install", "started"),
            ("installer.install", "succeeded"),
        ]
        * 2
    )
    assert events[-1]["changed"] == 0


def test_a_release_without_the_real_cli_is_reported_not_faked(installed) -> None:
    """The tiny bundle's `sparkplane` only prints its version: nothing may pass for imported."""
    root, first, _ = installed
    assert first.audit_imported is None and first.first_admin is None
    assert any("did not confirm the import" in w for w in first.warnings), first.warnings
    assert any("first console admin was not created" in w for w in first.warnings)
    assert not (Layout.at(root).etc / "initial-admin-password").exists()


def _tampered_copy(bundle: Path, dest: Path) -> Path:
    shutil.copytree(bundle, dest)
    weights = dest / "models/tiny/model.safetensors"
    weights.chmod(0o644)
    data = bytearray(weights.read_bytes())
    data[0] ^= 0x01
    weights.write_bytes(bytes(data))
    (dest / "engine/wheelhouse/evil-1.0-py3-none-any.whl").write_bytes(b"zip?")
    return dest


def test_tampered_bundle_is_refused_and_nothing_is_created(bundle, keys, tmp_path) -> None:
    bad = _tampered_copy(bundle, tmp_path / "bad")
    root = tmp_path / "fresh-root"
    key = signing.load_public_key(keys / "bundle.pub")
    with pytest.raises(InstallError) as caught:
        install(bad, root, [key])
    text = "\n".join(caught.value.details)
    assert "models/tiny/model.safetensors: modified" in text
    assert "engine/wheelhouse/evil-1.0-py3-none-any.whl: unexpected" in text
    assert not root.exists()


def test_cli_refuses_a_tampered_bundle_naming_every_finding(bundle, keys, tmp_path) -> None:
    bad = _tampered_copy(bundle, tmp_path / "bad")
    root = tmp_path / "fresh-root"
    done = subprocess.run(
        [
            SPARKPLANE,
            "install",
            str(bad),
            "--root",
            str(root),
            "--trust",
            str(keys / "bundle.pub"),
            "--yes",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "model.safetensors: modified" in done.stderr
    assert "evil-1.0-py3-none-any.whl: unexpected" in done.stderr
    assert not root.exists()


def test_unknown_signer_is_refused(bundle, tmp_path) -> None:
    signing.generate_keypair(tmp_path / "other")
    other = signing.load_public_key(tmp_path / "other/bundle.pub")
    with pytest.raises(InstallError) as caught:
        install(bundle, tmp_path / "root", [other])
    assert any("unknown-signer" in line for line in caught.value.details)
    assert not (tmp_path / "root").exists()


def test_cli_rerun_reports_zero_changes_and_keeps_the_trusted_key(installed, bundle, keys) -> None:
    root, _, _ = installed
    done = subprocess.run(
        [
            SPARKPLANE,
            "install",
            str(bundle),
            "--root",
            str(root),
            "--trust",
            str(keys / "bundle.pub"),
            "--yes",
            "--engine-port",
            "18000",
            "--port",
            "18080",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "changed=0" in done.stdout
    assert list(Layout.at(root).trust.glob("*.pub")), "the confirmed key is stored"


def test_vars_the_installer_decides_are_refused_and_nothing_is_installed(
    bundle, keys, tmp_path
) -> None:
    """`sparkplane_manage_system: true` in --vars on a temp root would let the playbooks create
    users and call systemctl and nft there; it is refused like every derived variable."""
    root = tmp_path / "fresh-root"
    site = tmp_path / "site.yml"
    site.write_text(
        "sparkplane_manage_system: true\n"
        f"sparkplane_etc_dir: {tmp_path / 'elsewhere'}\n"
        "sparkplane_model_source_dir: /media/other/models/tiny\n"
        "sparkplane_draft_model_dir: /tmp/draft\n"
        "sparkplane_draft_model_source_dir: /media/other/models/draft\n"
        "sparkplane_firewall_ssh_port: 2222\n"  # a site setting: accepted
    )
    done = run("install", bundle, "--root", root, "--trust", keys / "bundle.pub", "--yes",
               "--engine-port", 18500, "--port", 18580, "--vars", site)  # fmt: skip
    assert done.returncode == 1
    said = " ".join(done.stderr.split())  # rich wraps long lines
    assert "site variables refused; nothing was installed" in said
    assert "sparkplane_manage_system: the installer decides it: true only with --systemd" in said
    for name in ("sparkplane_etc_dir", "sparkplane_model_source_dir",
                 "sparkplane_draft_model_dir", "sparkplane_draft_model_source_dir"):  # fmt: skip
        assert f"{name}: " in said, name
    assert "sparkplane_firewall_ssh_port" not in said
    assert not root.exists()
