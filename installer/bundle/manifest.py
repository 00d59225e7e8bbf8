"""The bundle manifest: its model, its canonical (signed) bytes, and path-safety rules.

`manifest.json` is canonical JSON (sorted keys, no spaces, UTF-8); exactly those bytes are signed,
so a manifest is parsed from and written as bytes, never re-serialised before verification.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
SIGNER_NAME = "signer.pub"
ENDORSEMENT_NAME = "signer.endorsement"
# Files at the bundle root that the manifest cannot list (they describe or authenticate it).
CONTROL_FILES = frozenset({MANIFEST_NAME, SIGNATURE_NAME, SIGNER_NAME, ENDORSEMENT_NAME})

Role = Literal[
    "engine",
    "model",
    "draft_model",
    "flashinfer",
    "controlplane",
    "playbooks",
    "templates",
    "files",
]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """The manifest bytes are not a valid manifest of this schema."""


def unsafe_path_reason(path: str) -> str | None:
    """Why `path` may not name a file inside a bundle, or None when it is a safe relative path."""
    if not path:
        return "empty path"
    if "\x00" in path or "\\" in path:
        return "contains NUL or backslash"
    if path.startswith("/"):
        return "absolute path"
    parts = path.split("/")
    if any(part == ".." for part in parts):
        return "contains '..'"
    if any(part in ("", ".") for part in parts):
        return "empty or '.' path component"
    return None


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    size: int = Field(ge=0)
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        if not _SHA256.match(value):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return value


class Platform(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arch: Literal["x86_64", "aarch64"]
    accelerator: Literal["cpu", "cuda"]
    cuda: str | None = None
    sm: str | None = None
    python: str | None = None


class Component(BaseModel):
    """One part of the bundle; role-specific keys (runtime, served_model_name, ...) ride along."""

    model_config = ConfigDict(extra="allow")
    name: str
    role: Role
    path: str


class Package(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    version: str
    file: str
    component: str | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    schema_: Literal[1] = Field(alias="schema")
    name: str
    version: str
    created: str
    tool_version: str
    platform: Platform
    components: list[Component]
    files: list[FileEntry]
    packages: list[Package] = []
    sbom: str | None = None
    provenance: dict[str, Any] = {}

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.model_dump(by_alias=True, exclude_none=True))

    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_manifest(data: bytes) -> Manifest:
    """Parse and check manifest bytes; every structural problem raises ManifestError."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"not UTF-8 JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ManifestError("top level is not a JSON object")
    if raw.get("schema") != SCHEMA_VERSION:
        raise ManifestError(f"unsupported schema {raw.get('schema')!r} (expected {SCHEMA_VERSION})")
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ManifestError(f"{where}: {first['msg']} ({exc.error_count()} problem(s))") from exc
    paths = [entry.path for entry in manifest.files]
    if paths != sorted(paths):
        raise ManifestError("files are not sorted by path")
    if len(set(paths)) != len(paths):
        raise ManifestError("files list a path more than once")
    return manifest
