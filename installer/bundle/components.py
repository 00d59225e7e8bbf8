"""Staging of each bundle component into the bundle directory under construction.

Sources are read with symlinks followed (a Hugging Face cache snapshot is a tree of symlinks into
its blob store); the bundle itself only ever holds regular files, copied (never hard-linked).
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from installer.bundle import spec as specs
from installer.bundle.demo_model import STEPS, DemoModelError, copy_checked, demo_models
from installer.bundle.hashing import hash_tree_files
from installer.bundle.modelsig import (
    SIGNATURE_FILE,
    ModelSignatureError,
    ModelTrust,
    verify_model_signature,
)
from installer.bundle.wheelhouse import (
    build_project_wheel,
    copy_wheels,
    fetch_wheelhouse,
    requirement_lines,
)


class ComponentError(RuntimeError):
    """A component's source is missing or not what the spec says it is."""


@dataclass
class Staged:
    entry: dict[str, Any]  # the manifest's component record
    wheels: list[str] = field(default_factory=list)  # bundle paths of wheels it contributed
    artifacts: list[tuple[str, str, str]] = field(default_factory=list)  # (sbom kind, name, path)


def component_path(component: specs.ComponentSpec) -> str:
    """Where a component lives inside the bundle (fixed by docs/architecture.md)."""
    if isinstance(component, specs.EngineSpec):
        return "engine/wheelhouse" if component.runtime == "wheelhouse" else "engine/image.oci.tar"
    if isinstance(component, specs.ModelSpec):
        return f"models/{component.name}"
    if isinstance(component, specs.FlashinferSpec):
        return "flashinfer"
    if isinstance(component, specs.ControlplaneSpec):
        return "controlplane/wheelhouse"
    if isinstance(component, specs.TreeSpec):
        return component.role
    return component.dest


def stage(
    spec: specs.BundleSpec,
    component: specs.ComponentSpec,
    root: Path,
    log: Callable[[str], None] = lambda _: None,
) -> Staged:
    """Copy or fetch one component into the bundle under construction at `root`."""
    rel = component_path(component)
    staged = Staged({"name": component.name, "role": component.role, "path": rel})
    if isinstance(component, specs.EngineSpec):
        _stage_engine(spec, component, root, staged)
    elif isinstance(component, specs.ModelSpec):
        _stage_model(spec, component, root / rel, staged.entry, log)
        staged.artifacts.append(("machine-learning-model", component.name, rel))
    elif isinstance(component, specs.FlashinferSpec):
        _stage_flashinfer(spec, component, root, staged)
    elif isinstance(component, specs.ControlplaneSpec):
        _stage_controlplane(spec, component, root, staged)
    else:
        _copy_tree(spec.resolve(component.source), root / rel, component.name)
    return staged


def _stage_engine(
    spec: specs.BundleSpec, component: specs.EngineSpec, root: Path, staged: Staged
) -> None:
    rel, entry = staged.entry["path"], staged.entry
    entry["runtime"] = component.runtime
    if component.runtime == "wheelhouse":
        assert component.requirements is not None
        reqs = _requirements(spec, component.requirements)
        cached = fetch_wheelhouse(
            reqs, platform_tags=component.platform_tags, python=spec.platform.python
        )
        wheels = copy_wheels(cached, root / rel, component.exclude)
        staged.wheels = [f"{rel}/{w.name}" for w in wheels]
        entry |= {"requirements": reqs, "excluded": sorted(component.exclude)}
        entry["platform_tags"] = component.platform_tags
    else:
        assert component.image is not None
        assert component.image_ref is not None
        entry["image_ref"] = component.image_ref
        entry["image_format"] = _copy_image(spec, component.image, component.image_ref, root / rel)
        staged.artifacts.append(("container", component.image_ref or component.name, rel))


def _stage_flashinfer(
    spec: specs.BundleSpec, component: specs.FlashinferSpec, root: Path, staged: Staged
) -> None:
    rel, entry = staged.entry["path"], staged.entry
    if component.source:
        _copy_tree(spec.resolve(component.source), root / rel / "cache", component.name)
        entry["cache_dir"] = f"{rel}/cache"
        staged.artifacts.append(("data", f"{component.name}-cache", f"{rel}/cache"))
    if component.requirements:
        reqs = _requirements(spec, component.requirements)
        cached = fetch_wheelhouse(
            reqs, platform_tags=component.platform_tags, python=spec.platform.python
        )
        wheels = copy_wheels(cached, root / rel / "wheelhouse", [])
        staged.wheels = [f"{rel}/wheelhouse/{w.name}" for w in wheels]
        entry |= {"wheelhouse": f"{rel}/wheelhouse", "requirements": reqs}


def _stage_controlplane(
    spec: specs.BundleSpec, component: specs.ControlplaneSpec, root: Path, staged: Staged
) -> None:
    rel = staged.entry["path"]
    project = spec.resolve(component.project)
    deps = _project_dependencies(project)
    cached = fetch_wheelhouse(
        deps, platform_tags=component.platform_tags, python=spec.platform.python
    )
    wheels = copy_wheels(cached, root / rel, [])
    if component.wheel:
        prebuilt = spec.resolve(component.wheel)
        if not prebuilt.is_file() or not prebuilt.name.startswith("sparkplane-"):
            raise ComponentError(f"controlplane wheel {prebuilt} is not a sparkplane wheel")
        wheels.append(Path(shutil.copyfile(prebuilt, root / rel / prebuilt.name)))
    else:
        wheels.append(build_project_wheel(project, root / rel))
    staged.wheels = sorted(f"{rel}/{w.name}" for w in wheels)
    staged.entry["requirements"] = deps


def _requirements(spec: specs.BundleSpec, relative: str) -> list[str]:
    path = spec.resolve(relative)
    try:
        lines = requirement_lines(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ComponentError(f"cannot read requirements {path}: {exc.strerror}") from exc
    if not lines:
        raise ComponentError(f"requirements file {path} lists nothing")
    return lines


def _project_dependencies(project: Path) -> list[str]:
    try:
        data = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ComponentError(f"cannot read {project}/pyproject.toml: {exc}") from exc
    deps = data.get("project", {}).get("dependencies", [])
    if not deps:
        raise ComponentError(f"{project}/pyproject.toml has no [project].dependencies")
    return list(deps)


def _stage_model(
    spec: specs.BundleSpec,
    component: specs.ModelSpec,
    dest: Path,
    entry: dict[str, Any],
    log: Callable[[str], None],
) -> None:
    if component.generate == "demo":
        assert component.corpus is not None and component.trainer is not None
        try:
            models = demo_models(
                spec.resolve(component.corpus),
                _requirements(spec, component.trainer),
                steps=component.steps or STEPS,
                log=log,
            )
            source = models.model if component.role == "model" else models.assistant
            digest = copy_checked(source, dest, component.digest, f"model {component.name}")
        except DemoModelError as exc:
            raise ComponentError(str(exc)) from exc
        entry["generated"] = "demo"
        entry["recipe"] = {**models.recipe, "digest": digest, "pinned": bool(component.digest)}
    else:
        assert component.source is not None
        source = spec.resolve(component.source)
        if not (source / "config.json").is_file():
            raise ComponentError(f"model {component.name}: {source} has no config.json")
        _copy_tree(source, dest, component.name)
    _check_model_signature(spec, component, dest, entry)
    config = json.loads((dest / "config.json").read_text(encoding="utf-8"))
    entry["architectures"] = config.get("architectures", [])
    entry["model_type"] = config.get("model_type")
    quant = dest / "hf_quant_config.json"
    if quant.is_file():
        algo = json.loads(quant.read_text(encoding="utf-8")).get("quantization", {})
        entry["quantization"] = algo.get("quant_algo")
    if component.role == "model":
        entry["served_model_name"] = component.served_model_name or component.name


def _check_model_signature(
    spec: specs.BundleSpec, component: specs.ModelSpec, dest: Path, entry: dict[str, Any]
) -> None:
    """Record an OpenSSF model signature; verify it when the spec names who must have signed."""
    signature = dest / SIGNATURE_FILE
    if signature.is_file():
        entry["model_signature"] = SIGNATURE_FILE
    if not component.signing_trust:
        return
    if not signature.is_file():
        raise ComponentError(
            f"model {component.name}: no {SIGNATURE_FILE} but signing_trust is set"
        )
    trust = ModelTrust.from_paths([spec.resolve(p) for p in component.signing_trust])
    files = [p for p in dest.rglob("*") if p.is_file()]
    jobs = [(p.relative_to(dest).as_posix(), p.stat().st_size) for p in files]
    digests = {
        path: result.sha256
        for path, result in hash_tree_files(dest, jobs).items()
        if not isinstance(result, OSError)
    }
    try:
        verify_model_signature(signature.read_bytes(), digests, trust)
    except ModelSignatureError as exc:
        raise ComponentError(f"model {component.name}: model signature: {exc}") from exc


def _copy_image(spec: specs.BundleSpec, image: str, image_ref: str, dest: Path) -> str:
    """Copy an OCI or docker-save archive that holds `image_ref`; return the archive kind."""
    source = spec.resolve(image)
    try:
        with tarfile.open(source) as archive:
            names = set(archive.getnames())
            if "index.json" in names and "oci-layout" in names:
                kind, refs = "oci-archive", _oci_refs(archive)
            elif "manifest.json" in names:
                kind, refs = "docker-archive", _docker_refs(archive)
            else:
                raise ComponentError(
                    f"engine image {source} is neither an OCI nor a docker-save archive"
                )
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise ComponentError(f"engine image {source} is not a readable archive: {exc}") from exc
    if not any(_same_image(image_ref, ref) for ref in refs):
        held = ", ".join(refs) or "no named image"
        raise ComponentError(f"engine image {source} does not hold {image_ref} (it holds {held})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    return kind


def _json_member(archive: tarfile.TarFile, name: str) -> Any:
    member = archive.extractfile(name)
    if member is None:
        raise ValueError(f"{name} is not a file")
    return json.loads(member.read())


def _docker_refs(archive: tarfile.TarFile) -> list[str]:
    return [
        tag
        for image in _json_member(archive, "manifest.json")
        for tag in image.get("RepoTags") or []
    ]


def _oci_refs(archive: tarfile.TarFile) -> list[str]:
    manifests = _json_member(archive, "index.json").get("manifests") or []
    annotations = [m.get("annotations") or {} for m in manifests]
    return [
        a["org.opencontainers.image.ref.name"]
        for a in annotations
        if "org.opencontainers.image.ref.name" in a
    ]


def _same_image(wanted: str, held: str) -> bool:
    """Docker Hub names are stored with or without their docker.io/ (library/) prefix."""

    def plain(ref: str) -> str:
        return ref.removeprefix("docker.io/").removeprefix("library/")

    return plain(wanted) == plain(held)


def _copy_tree(source: Path, dest: Path, what: str) -> None:
    if not source.is_dir():
        raise ComponentError(f"component {what}: source directory {source} does not exist")
    try:
        shutil.copytree(
            source,
            dest,
            symlinks=False,
            ignore=shutil.ignore_patterns(".git", "__pycache__", ".cache", "*.pyc"),
            dirs_exist_ok=True,
        )
    except (OSError, shutil.Error) as exc:
        raise ComponentError(f"component {what}: copying {source} failed: {exc}") from exc
