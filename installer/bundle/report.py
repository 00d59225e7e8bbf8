"""The result of a bundle verification: findings plus what was learnt about the bundle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controlplane.core import signing
from installer.bundle.manifest import Manifest

# Problem codes, in the order a reader wants them: trust first, then content.
PROBLEMS = (
    "malformed-manifest",
    "bad-signature",
    "unknown-signer",
    "revoked-signer",
    "unsafe-path",
    "missing",
    "truncated",
    "modified",
    "renamed",
    "unexpected",
    "unreadable",
    "model-signature",
)


@dataclass(frozen=True)
class Finding:
    path: str
    problem: str  # one of PROBLEMS
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "problem": self.problem, "detail": self.detail}


@dataclass
class VerifyReport:
    findings: list[Finding] = field(default_factory=list)
    manifest: Manifest | None = None
    signer: Ed25519PublicKey | None = None
    endorsed_by: str | None = None  # fingerprint of the trusted key that endorsed a new signer
    # (component, "verified" | "invalid" | "unchecked", detail) per model carrying model.sig
    model_signatures: list[tuple[str, str, str]] = field(default_factory=list)
    files_checked: int = 0
    bytes_hashed: int = 0
    elapsed: float = 0.0
    _seen: set[tuple[str, str]] = field(default_factory=set, repr=False)

    @property
    def ok(self) -> bool:
        return not self.findings and self.manifest is not None

    @property
    def signer_fingerprint(self) -> str | None:
        return signing.fingerprint(self.signer) if self.signer is not None else None

    def add(self, path: str, problem: str, detail: str) -> None:
        assert problem in PROBLEMS, problem
        if (path, problem) not in self._seen:  # one finding per path and problem
            self._seen.add((path, problem))
            self.findings.append(Finding(path, problem, detail))

    def problems(self) -> set[str]:
        return {finding.problem for finding in self.findings}

    def sorted_findings(self) -> list[Finding]:
        return sorted(self.findings, key=lambda f: (PROBLEMS.index(f.problem), f.path))

    def _components(self) -> list[dict[str, Any]]:
        if self.manifest is None:
            return []
        result = []
        for component in self.manifest.components:
            inside = [
                f.size
                for f in self.manifest.files
                if f.path == component.path or f.path.startswith(component.path + "/")
            ]
            result.append(
                {"name": component.name, "role": component.role, "path": component.path,
                 "files": len(inside), "bytes": sum(inside)}
            )  # fmt: skip
        return result

    def as_dict(self) -> dict[str, Any]:
        manifest = self.manifest
        rate = self.bytes_hashed / self.elapsed / 1e6 if self.elapsed > 0 else 0.0
        return {
            "ok": self.ok,
            "name": manifest.name if manifest else None,
            "version": manifest.version if manifest else None,
            "platform": manifest.platform.model_dump(exclude_none=True) if manifest else None,
            "components": self._components(),
            "files": len(manifest.files) if manifest else 0,
            "bytes": manifest.total_bytes() if manifest else 0,
            "signer": self.signer_fingerprint,
            "endorsed_by": self.endorsed_by,
            "model_signatures": [
                {"component": name, "status": status, "detail": detail}
                for name, status, detail in self.model_signatures
            ],
            "files_hashed": self.files_checked,
            "bytes_hashed": self.bytes_hashed,
            "elapsed_s": round(self.elapsed, 3),
            "mb_per_s": round(rate, 1),
            "findings": [finding.as_dict() for finding in self.sorted_findings()],
        }
