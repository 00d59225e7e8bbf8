"""A small OCI image of the CPU engine, built offline for the container-runtime test.

Two layers: Debian bookworm (mmdebstrap --variant=minbase, python3 and the three shared
libraries the engine's wheels link against), cached in the sparkplane cache because it is the
only part fetched from Debian's mirror; and the engine itself, the site-packages that the real
installer produced from the bundle's wheelhouse, placed where Debian's python3 finds them. The
archive is written in the OCI image layout (oci-layout, index.json with the image's name,
blobs/sha256/...), which `podman load` reads and `sparkplane bundle build` accepts.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

from installer.bundle.wheelhouse import cache_root

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ["python3", "libnuma1", "libgomp1", "libtbb12"]
SITE_PACKAGES = "usr/local/lib/python3.11/dist-packages"
LAYER = "application/vnd.oci.image.layer.v1.tar"


def _mmdebstrap_argv(out: Path) -> list[str]:
    return [
        "mmdebstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
        "--aptopt=Acquire::Languages \"none\"",
        "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*", SUITE, str(out), MIRROR,
    ]  # fmt: skip


def debian_base() -> Path:
    """The base layer: a rootfs tar from Debian's packages, made once per package list."""
    key = hashlib.sha256(json.dumps(_mmdebstrap_argv(Path("OUT"))).encode()).hexdigest()[:16]
    target = cache_root() / "test-images" / f"debian-{SUITE}-python3-{key}.tar"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.stem}.partial-{os.getpid()}.tar")  # mmdebstrap: .tar
    done = subprocess.run(_mmdebstrap_argv(partial), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"mmdebstrap failed:\n{done.stderr[-2000:]}")
    partial.rename(target)
    return target


def engine_layer(site_packages: Path, out: Path) -> Path:
    """A layer holding the installed engine's site-packages under Debian python3's path."""
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tree = Path(tmp) / "tree"
        (tree / SITE_PACKAGES).parent.mkdir(parents=True)
        # Hard links: the files are read once, by tar, instead of copied first.
        subprocess.run(["cp", "-al", str(site_packages), str(tree / SITE_PACKAGES)], check=True)
        subprocess.run(
            ["tar", "--create", "--file", str(out), "--numeric-owner", "--owner=0", "--group=0",
             "--directory", str(tree), "usr"],
            check=True,
        )  # fmt: skip
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_oci_archive(layers: list[Path], name: str, out: Path) -> None:
    """An OCI image-layout tar of `layers` (uncompressed), named `name` in index.json."""
    digests = [_sha256(layer) for layer in layers]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": ["python3"],
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in digests]},
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
            "size": len(config_bytes),
        },
        "layers": [
            {"mediaType": LAYER, "digest": f"sha256:{d}", "size": layer.stat().st_size}
            for layer, d in zip(layers, digests, strict=True)
        ],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = hashlib.sha256(manifest_bytes).hexdigest()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": f"sha256:{manifest_digest}",
                "size": len(manifest_bytes),
                "annotations": {"org.opencontainers.image.ref.name": name},
            }
        ],
    }
    with tarfile.open(out, "w") as archive:
        for member, data in (
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            ("index.json", json.dumps(index).encode()),
            (f"blobs/sha256/{manifest_digest}", manifest_bytes),
            (f"blobs/sha256/{hashlib.sha256(config_bytes).hexdigest()}", config_bytes),
        ):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for layer, digest in zip(layers, digests, strict=True):
            archive.add(layer, arcname=f"blobs/sha256/{digest}")


def build_engine_image(site_packages: Path, name: str, workdir: Path) -> Path:
    """The whole image archive; returns its path (the layers' temporary files are removed)."""
    workdir.mkdir(parents=True, exist_ok=True)
    engine = engine_layer(site_packages, workdir / "engine-layer.tar")
    archive = workdir / "engine-image.oci.tar"
    try:
        write_oci_archive([debian_base(), engine], name, archive)
    finally:
        engine.unlink(missing_ok=True)
    return archive
