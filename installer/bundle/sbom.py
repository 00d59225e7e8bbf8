"""CycloneDX 1.5 SBOM of a bundle: every wheel (with purl and SHA-256), images and models."""

from __future__ import annotations

import email.parser
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from installer.bundle.manifest import canonical_json

SBOM_PATH = "sbom.cdx.json"
_NAMESPACE = uuid.UUID("6f1b0d3e-2f34-4e4f-9d55-7b0c3a2a5e11")


@dataclass(frozen=True)
class SbomItem:
    kind: str  # "library" (a wheel), "container", "machine-learning-model", "data"
    name: str
    version: str
    path: str  # file or directory inside the bundle
    sha256: str | None = None
    component: str = ""  # the bundle component it belongs to
    purl: str | None = None
    license: dict[str, Any] | None = None  # a CycloneDX license choice


def wheel_item(
    name: str, version: str, path: str, sha256: str, component: str, wheel: Path
) -> SbomItem:
    purl = f"pkg:pypi/{name}@{version}"
    return SbomItem("library", name, version, path, sha256, component, purl, wheel_license(wheel))


def wheel_license(wheel: Path) -> dict[str, Any] | None:
    """The licence a wheel declares in its METADATA (expression, OSI classifier or short text)."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
            if len(names) != 1:
                return None
            meta = email.parser.BytesHeaderParser().parsebytes(archive.read(names[0]))
    except (zipfile.BadZipFile, OSError, KeyError):
        return None  # not a readable wheel: the SBOM simply has no licence for it
    if expression := (meta.get("License-Expression") or "").strip():
        return {"expression": expression}
    osi = "License :: OSI Approved :: "
    classifiers = [c[len(osi) :] for c in meta.get_all("Classifier") or [] if c.startswith(osi)]
    if classifiers:
        return {"license": {"name": classifiers[0]}}
    text = (meta.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= 80:
        return {"license": {"name": text}}
    return None


def build_sbom(
    bundle_name: str, bundle_version: str, created: str, tool_version: str, items: list[SbomItem]
) -> bytes:
    """Deterministic CycloneDX JSON: the serial number derives from the content, not randomness."""
    components = [_component(item) for item in sorted(items, key=lambda i: (i.path, i.name))]
    identity = canonical_json([bundle_name, bundle_version, components])
    document: dict[str, Any] = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid5(_NAMESPACE, identity.decode())}",
        "version": 1,
        "metadata": {
            "timestamp": created,
            "tools": {
                "components": [
                    {"type": "application", "name": "sparkplane", "version": tool_version}
                ]
            },
            "component": {
                "type": "application",
                "bom-ref": f"bundle:{bundle_name}@{bundle_version}",
                "name": bundle_name,
                "version": bundle_version,
            },
        },
        "components": components,
    }
    return canonical_json(document) + b"\n"


def _component(item: SbomItem) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": item.kind,
        "bom-ref": f"{item.component}:{item.path}",
        "name": item.name,
        "version": item.version,
        "properties": [
            {"name": "sparkplane:bundle-path", "value": item.path},
            {"name": "sparkplane:component", "value": item.component},
        ],
    }
    if item.purl:
        entry["purl"] = item.purl
    if item.sha256:
        entry["hashes"] = [{"alg": "SHA-256", "content": item.sha256}]
    if item.license:
        entry["licenses"] = [item.license]
    return entry
