"""Bundle spec: the YAML file that says what goes into a bundle (format: offline-bundle/README.md).

Relative paths in a spec are relative to the spec file. String values may use `${NAME}` or
`${NAME:-default}`; names come from `--var NAME=VALUE` first, then the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from installer.bundle.manifest import Platform, unsafe_path_reason

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class SpecError(ValueError):
    """The bundle spec cannot be read or is not valid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_NAME)

    @model_validator(mode="before")
    @classmethod
    def _blank_is_absent(cls, data: Any) -> Any:
        # `${VAR:-}` expands to "": treat such optional values as not given.
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value != ""}
        return data


class EngineSpec(_Strict):
    role: Literal["engine"]
    runtime: Literal["wheelhouse", "container"]
    # runtime wheelhouse: pinned requirements resolved for the target platform.
    requirements: str | None = None
    exclude: list[str] = []
    platform_tags: list[str] = []
    # runtime container: an OCI/docker archive made on the staging machine, and its image name.
    image: str | None = None
    image_ref: str | None = None

    @model_validator(mode="after")
    def _runtime_fields(self) -> EngineSpec:
        if self.runtime == "wheelhouse" and not self.requirements:
            raise ValueError("runtime 'wheelhouse' needs 'requirements'")
        if self.runtime == "container" and not (self.image and self.image_ref):
            raise ValueError("runtime 'container' needs 'image' (archive path) and 'image_ref'")
        return self


class ModelSpec(_Strict):
    role: Literal["model", "draft_model"]
    source: str | None = None  # a local Hugging Face snapshot directory
    # Or the tiny Gemma 4 demo model (role model) / its MTP assistant (role draft_model),
    # trained at build time (installer/bundle/demo_model.py).
    generate: Literal["demo"] | None = None
    corpus: str | None = None  # `generate: demo`: tokenizer training text
    trainer: str | None = None  # `generate: demo`: requirements whose torch + transformers train it
    digest: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")  # pinned generated files
    steps: int | None = Field(default=None, ge=1)  # `generate: demo`: training steps, or STEPS
    served_model_name: str | None = None
    # Keys / CA certificates (PEM) that must have signed the source's OpenSSF `model.sig`.
    signing_trust: list[str] = []

    @model_validator(mode="after")
    def _one_origin(self) -> ModelSpec:
        if (self.source is None) == (self.generate is None):
            raise ValueError("give exactly one of 'source' and 'generate'")
        if self.generate and not (self.corpus and self.trainer):
            raise ValueError(
                "'generate: demo' needs 'corpus' (tokenizer training text) and 'trainer' "
                "(requirements of the wheelhouse whose torch and transformers train it)"
            )
        if self.digest and not self.generate:
            raise ValueError("'digest' pins generated files; a 'source' model has its manifest")
        if self.steps and not self.generate:
            raise ValueError("'steps' is how long a generated model trains; a 'source' has none")
        return self


class FlashinferSpec(_Strict):
    role: Literal["flashinfer"]
    source: str | None = None  # a directory of downloaded cubins / JIT cache
    requirements: str | None = None  # or wheels such as flashinfer-cubin, flashinfer-jit-cache
    platform_tags: list[str] = []

    @model_validator(mode="after")
    def _something(self) -> FlashinferSpec:
        if not (self.source or self.requirements):
            raise ValueError("give 'source' and/or 'requirements'")
        return self


class ControlplaneSpec(_Strict):
    role: Literal["controlplane"]
    project: str = ".."  # directory holding sparkplane's pyproject.toml
    wheel: str | None = None  # a prebuilt sparkplane wheel (e.g. from CI) instead of building one
    platform_tags: list[str] = []


class TreeSpec(_Strict):
    role: Literal["playbooks", "templates"]
    source: str


class FilesSpec(_Strict):
    role: Literal["files"]
    source: str
    dest: str

    @model_validator(mode="after")
    def _safe_dest(self) -> FilesSpec:
        reason = unsafe_path_reason(self.dest)
        if reason:
            raise ValueError(f"dest {self.dest!r}: {reason}")
        return self


ComponentSpec = Annotated[
    EngineSpec | ModelSpec | FlashinferSpec | ControlplaneSpec | TreeSpec | FilesSpec,
    Field(discriminator="role"),
]


class BundleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_: Literal[1] = Field(alias="schema")
    name: str = Field(pattern=_NAME)
    version: str = Field(pattern=_NAME)
    platform: Platform
    components: list[ComponentSpec] = Field(min_length=1)
    base_dir: Path = Path(".")  # set by load_spec, not read from YAML

    def resolve(self, relative: str) -> Path:
        return (self.base_dir / relative).resolve()

    @model_validator(mode="after")
    def _unique_names(self) -> BundleSpec:
        names = [component.name for component in self.components]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"component names used twice: {', '.join(duplicates)}")
        if sum(1 for c in self.components if c.role == "engine") > 1:
            raise ValueError("at most one engine component")
        return self


def load_spec(path: Path, variables: Mapping[str, str] | None = None) -> BundleSpec:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SpecError(f"bundle spec not found: {path}") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: cannot read bundle spec: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a bundle spec is a YAML mapping")
    lookup = {**os.environ, **(variables or {})}
    raw = _substitute(raw, lookup, path)
    raw.pop("base_dir", None)
    try:
        spec = BundleSpec.model_validate({**raw, "base_dir": path.resolve().parent})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise SpecError(f"{path}: invalid bundle spec: {problems}") from exc
    return spec


def _substitute(value: Any, lookup: Mapping[str, str], path: Path) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in lookup and lookup[name] != "":
                return lookup[name]
            if default is not None:
                return default
            raise SpecError(f"{path}: variable ${{{name}}} is not set (use --var {name}=...)")

        return _VARIABLE.sub(replace, value)
    if isinstance(value, list):
        return [_substitute(item, lookup, path) for item in value]
    if isinstance(value, dict):
        return {key: _substitute(item, lookup, path) for key, item in value.items()}
    return value
