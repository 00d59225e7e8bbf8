"""One rootfs build, one image and two booted boxes per session, shared by the box tests.

The bundles (the real control plane, an engine serving tests/enginesim) are written to a media
directory that every box mounts read-only at the same path, as the removable media would be.
Another bundle or profile (a draft model for `latency`, say) is `box_world.bundle("1.1.0",
name="latency", <make_bundle options>)` installed with `box_world.provision(bundle,
inventory, profile="latency")`; in test_box.py such a test goes before the uninstall test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from controlplane.core import signing
from tests.installer.box.machine import (
    Box,
    import_image,
    podman_env,
    remove_image,
    rootfs_tarball,
    tools_missing,
)
from tests.installer.fixtures.bundles import make_bundle

BOXES = ("a", "b")
SPARKPLANE = str(Path(sys.executable).parent / "sparkplane")


@dataclass
class BoxWorld:
    """What the box tests share; later tests build on what earlier ones left (file order)."""

    base: Path
    media: Path
    keys: Path
    ssh_key: Path
    boxes: dict[str, Box]
    notes: dict[str, object] = field(default_factory=dict)

    def bundle(self, version: str, name: str = "", **options: Any) -> Path:
        """A signed bundle of `version` on the media, built once per name: the real control
        plane, the simulator engine, and any other `make_bundle` option (a draft model...)."""
        path = self.media / f"bundle-{name or version}"
        if not (path / "manifest.json").is_file():
            make_bundle(path, self.keys / "bundle.key", version=version, real_controlplane=True,
                        sim_engine=True, **options)  # fmt: skip
        return path

    def provision(self, bundle: Path, inventory: Path, profile: str = "demo") -> str:
        """`sparkplane install BUNDLE --inventory` from this machine over SSH, any profile;
        returns its output (it must succeed)."""
        done = subprocess.run(
            [SPARKPLANE, "install", str(bundle), "--inventory", str(inventory), "--profile",
             profile, "--root", str(self.base / "control"), "--trust",
             str(self.keys / "bundle.pub"), "--yes"],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        return output


@pytest.fixture(scope="session")
def box_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BoxWorld]:
    missing = tools_missing()
    assert not missing, f"the box tests need {missing} (make host-tools installs them)"
    base = tmp_path_factory.mktemp("box")
    media = base / "media"
    media.mkdir()
    signing.generate_keypair(media / "keys")
    ssh_key = base / "id_box"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_key)],
                   check=True, capture_output=True)  # fmt: skip
    env = podman_env(base)
    tag = f"localhost/sp-box-{os.getpid()}:rootfs"
    import_image(rootfs_tarball(), tag, env)
    boxes: dict[str, Box] = {}
    try:
        for name in BOXES:
            box_name = f"sp-box-{os.getpid()}-{name}"
            boxes[name] = Box.start(box_name, tag, env, [media], ssh_key)
        yield BoxWorld(base, media, media / "keys", ssh_key, boxes)
    finally:
        for box in boxes.values():
            box.remove()
        remove_image(tag, env)
