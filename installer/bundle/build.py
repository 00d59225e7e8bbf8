"""`sparkplane bundle build`: stage every component, hash every file, write and sign the manifest.

The bundle is assembled in a sibling `*.partial-*` directory and renamed into place at the end,
so an interrupted build never leaves something that looks like a bundle.
"""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane.core import signing
from installer.bundle import components, sbom
from installer.bundle.hashing import Digest, ProgressSink, hash_tree_files
from installer.bundle.manifest import (
    CONTROL_FILES,
    ENDORSEMENT_NAME,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    SIGNER_NAME,
    Component,
    FileEntry,
    Manifest,
    Package,
)
from installer.bundle.spec import BundleSpec, load_spec
from installer.bundle.wheelhouse import wheel_identity


class BuildError(RuntimeError):
    """The bundle could not be built; the message says which component and why."""


@dataclass(frozen=True)
class BuildResult:
    path: Path
    manifest: Manifest
    elapsed: float


def tool_version() -> str:
    try:
        return metadata.version("sparkplane")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def build_bundle(
    spec_path: Path,
    key_path: Path,
    out: Path,
    *,
    variables: Mapping[str, str] | None = None,
    endorsement: Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = lambda _: None,
    progress: ProgressSink | None = None,
) -> BuildResult:
    started = time.monotonic()
    spec = load_spec(spec_path, variables)
    private_key = signing.load_private_key(key_path)
    if endorsement is None and (key_path.parent / ENDORSEMENT_NAME).is_file():
        endorsement = key_path.parent / ENDORSEMENT_NAME
    _check_layout(spec)
    out = Path(out)
    if out.exists() and not force:
        raise BuildError(f"{out} already exists (use --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=out.name + ".partial-", dir=out.parent))
    try:
        staged = []
        for component in spec.components:
            log(f"staging {component.role} component {component.name}")
            try:
                staged.append(components.stage(spec, component, staging, log))
            except (components.ComponentError, OSError, RuntimeError) as exc:
                raise BuildError(f"component {component.name}: {exc}") from exc
        log("hashing files")
        digests = _hash_all(staging, progress)
        created = _created()
        packages, items = _inventory(staged, digests, staging)
        sbom_bytes = sbom.build_sbom(spec.name, spec.version, created, tool_version(), items)
        (staging / sbom.SBOM_PATH).write_bytes(sbom_bytes)
        digests[sbom.SBOM_PATH] = Digest(len(sbom_bytes), hashlib.sha256(sbom_bytes).hexdigest())
        manifest = Manifest(
            schema_=1,
            name=spec.name,
            version=spec.version,
            created=created,
            tool_version=tool_version(),
            platform=spec.platform,
            components=[Component.model_validate(s.entry) for s in staged],
            files=[
                FileEntry(path=p, size=d.size, sha256=d.sha256) for p, d in sorted(digests.items())
            ],
            packages=packages,
            sbom=sbom.SBOM_PATH,
            provenance=_provenance(spec_path, spec.resolve("..")),
        )
        _write_signed(staging, manifest, private_key, endorsement)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"bundle written to {out}")
    return BuildResult(out, manifest, time.monotonic() - started)


def _check_layout(spec: BundleSpec) -> None:
    """Component paths may not overlap each other or the bundle's control files."""
    paths = [(c.name, components.component_path(c)) for c in spec.components]
    for index, (name, path) in enumerate(paths):
        if path.split("/")[0] in CONTROL_FILES or path == sbom.SBOM_PATH:
            raise BuildError(f"component {name}: path {path} is reserved")
        for other_name, other in paths[index + 1 :]:
            if path == other or other.startswith(path + "/") or path.startswith(other + "/"):
                raise BuildError(f"components {name} and {other_name} overlap at {path} / {other}")


def _hash_all(root: Path, progress: ProgressSink | None) -> dict[str, Digest]:
    jobs = []
    for directory, _, files in os.walk(root):
        for file_name in files:
            full = Path(directory) / file_name
            jobs.append((full.relative_to(root).as_posix(), full.stat().st_size))
    results = hash_tree_files(root, jobs, progress=progress)
    digests: dict[str, Digest] = {}
    for path, result in results.items():
        if isinstance(result, OSError):
            raise BuildError(f"cannot hash staged file {path}: {result}")
        digests[path] = result
    return digests


def _inventory(
    staged: list[components.Staged], digests: dict[str, Digest], root: Path
) -> tuple[list[Package], list[sbom.SbomItem]]:
    packages, items = [], []
    for part in staged:
        name = part.entry["name"]
        for wheel_path in part.wheels:
            project, version = wheel_identity(wheel_path.rsplit("/", 1)[-1])
            packages.append(Package(name=project, version=version, file=wheel_path, component=name))
            sha = digests[wheel_path].sha256
            items.append(
                sbom.wheel_item(project, version, wheel_path, sha, name, root / wheel_path)
            )
        for kind, label, path in part.artifacts:
            digest = digests.get(path)  # a single-file artifact (an image) has its own hash
            artifact_sha = digest.sha256 if digest else None
            items.append(sbom.SbomItem(kind, label, "", path, artifact_sha, name))
    return sorted(packages, key=lambda p: (p.file, p.name)), items


def _created() -> str:
    # SOURCE_DATE_EPOCH makes the whole manifest reproducible when a publisher wants that.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = time.gmtime(int(epoch)) if epoch and epoch.isdigit() else time.gmtime()
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", moment)


def _provenance(spec_path: Path, repo: Path) -> dict[str, object]:
    revision = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return {
        "spec": spec_path.name,
        "spec_sha256": hashlib.sha256(spec_path.read_bytes()).hexdigest(),
        "source_revision": revision.stdout.strip() if revision.returncode == 0 else None,
        "builder": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "system": platform.system(),
        },
    }


def _write_signed(
    root: Path, manifest: Manifest, key: Ed25519PrivateKey, endorsement: Path | None
) -> None:
    data = manifest.canonical_bytes()
    (root / MANIFEST_NAME).write_bytes(data)
    signature = signing.sign(key, data)
    (root / SIGNATURE_NAME).write_text(base64.b64encode(signature).decode() + "\n")
    (root / SIGNER_NAME).write_bytes(signing.public_pem(key.public_key()))
    if endorsement is not None:
        shutil.copyfile(endorsement, root / ENDORSEMENT_NAME)
