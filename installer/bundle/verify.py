"""Bundle verification: signature and trust, then every file against the manifest, in parallel.

Every problem is reported, not just the first. Symlinks are never followed: the tree is walked
with lstat/scandir and files are opened with O_NOFOLLOW. Sizes are compared before hashing, so a
truncated shard costs nothing to detect.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Collection, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from installer.bundle.hashing import Digest, ProgressSink, hash_tree_files
from installer.bundle.manifest import (
    CONTROL_FILES,
    MANIFEST_NAME,
    FileEntry,
    ManifestError,
    parse_manifest,
    unsafe_path_reason,
)
from installer.bundle.modelsig import ModelSignatureError, ModelTrust, verify_model_signature
from installer.bundle.report import Finding, VerifyReport
from installer.bundle.signature import check_signature

__all__ = ["Finding", "VerifyReport", "verify_bundle"]


def verify_bundle(
    bundle_dir: Path,
    trusted: Sequence[Ed25519PublicKey],
    *,
    revoked: Collection[str] = (),
    workers: int | None = None,
    progress: ProgressSink | None = None,
    model_trust: ModelTrust | None = None,
) -> VerifyReport:
    """Check `bundle_dir` against its signed manifest; `revoked` holds key fingerprints.

    Models that carry an OpenSSF model-signing `model.sig` are checked against `model_trust`
    (public keys / CA certificates); without it they are reported as unchecked, not failed.
    """
    started = time.monotonic()
    bundle_dir = Path(bundle_dir)
    report = VerifyReport()
    if not bundle_dir.is_dir():
        report.add(str(bundle_dir), "missing", "bundle directory not found")
        return report
    manifest_bytes = _read_control(bundle_dir, MANIFEST_NAME, report)
    if manifest_bytes is not None:
        try:
            report.manifest = parse_manifest(manifest_bytes)
        except ManifestError as exc:
            report.add(MANIFEST_NAME, "malformed-manifest", str(exc))
        check_signature(bundle_dir, manifest_bytes, trusted, revoked, report)
    regular, odd = _walk(bundle_dir)
    for path, (problem, why) in sorted(odd.items()):
        report.add(path, problem, why)
    if report.manifest is not None:
        _check_files(bundle_dir, report, regular, odd, workers, progress)
        _check_model_signatures(bundle_dir, report, regular, model_trust)
    report.elapsed = time.monotonic() - started
    return report


def _read_control(bundle_dir: Path, name: str, report: VerifyReport) -> bytes | None:
    path = bundle_dir / name
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        report.add(name, "missing", "required file is absent")
        return None
    if not stat.S_ISREG(mode):
        report.add(name, "unsafe-path", "not a regular file (symlinks are not followed)")
        return None
    return path.read_bytes()


def _walk(root: Path) -> tuple[dict[str, int], dict[str, tuple[str, str]]]:
    """Regular files (path -> size) and everything else (path -> (problem, why)), no follow."""
    regular: dict[str, int] = {}
    odd: dict[str, tuple[str, str]] = {}
    pending = [("", root)]
    while pending:
        prefix, directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            odd[prefix.rstrip("/") or "."] = ("unreadable", f"directory: {exc.strerror}")
            continue
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_symlink():
                odd[rel] = ("unsafe-path", f"symlink to {os.readlink(entry.path)!r} (not followed)")
            elif entry.is_dir(follow_symlinks=False):
                pending.append((rel + "/", Path(entry.path)))
            elif entry.is_file(follow_symlinks=False):
                if not (prefix == "" and entry.name in CONTROL_FILES):
                    regular[rel] = entry.stat(follow_symlinks=False).st_size
            elif not (prefix == "" and entry.name in CONTROL_FILES):
                odd[rel] = ("unsafe-path", "not a regular file or directory")
    return regular, odd


def _check_files(
    root: Path,
    report: VerifyReport,
    regular: dict[str, int],
    odd: dict[str, tuple[str, str]],
    workers: int | None,
    progress: ProgressSink | None,
) -> None:
    assert report.manifest is not None
    for component in report.manifest.components:
        reason = unsafe_path_reason(component.path)
        if reason:
            report.add(component.path, "unsafe-path", f"component {component.name}: {reason}")
    missing: list[FileEntry] = []
    jobs: dict[str, FileEntry] = {}
    for entry in report.manifest.files:
        reason = unsafe_path_reason(entry.path)
        if reason is None and entry.path in CONTROL_FILES:
            reason = "names a bundle control file"
        if reason:
            report.add(entry.path, "unsafe-path", reason)
        elif entry.path in odd:
            continue  # already reported as unsafe where it stands
        elif entry.path not in regular:
            missing.append(entry)
        elif regular[entry.path] < entry.size:
            report.add(entry.path, "truncated", f"{regular[entry.path]} of {entry.size} bytes")
        elif regular[entry.path] > entry.size:
            report.add(
                entry.path, "modified", f"{regular[entry.path]} bytes, expected {entry.size}"
            )
        else:
            jobs[entry.path] = entry
    listed = {entry.path for entry in report.manifest.files}
    unexpected = {path: size for path, size in regular.items() if path not in listed}
    # Unlisted files the size of a missing one are hashed too, to tell a rename from a loss.
    missing_sizes = {entry.size for entry in missing}
    candidates = {path: size for path, size in unexpected.items() if size in missing_sizes}
    all_jobs = [(p, e.size) for p, e in jobs.items()] + list(candidates.items())
    results = hash_tree_files(root, all_jobs, workers=workers, progress=progress)
    report.files_checked = len(jobs)
    report.bytes_hashed = sum(size for _, size in all_jobs)
    for path, entry in jobs.items():
        _judge(report, entry, results[path])
    by_content = {
        (result.size, result.sha256): path
        for path, result in results.items()
        if path in candidates and isinstance(result, Digest)
    }
    for entry in missing:
        new_path = by_content.pop((entry.size, entry.sha256), None)
        if new_path is None:
            report.add(entry.path, "missing", f"listed in the manifest ({entry.size} bytes)")
        else:
            unexpected.pop(new_path)
            report.add(new_path, "renamed", f"content of {entry.path} found here")
    for path, size in sorted(unexpected.items()):
        report.add(path, "unexpected", f"not in the manifest ({size} bytes)")


def _judge(report: VerifyReport, entry: FileEntry, result: Digest | OSError) -> None:
    if isinstance(result, OSError):
        report.add(entry.path, "unreadable", result.strerror or str(result))
    elif result.size < entry.size:
        report.add(entry.path, "truncated", f"{result.size} of {entry.size} bytes")
    elif result.size != entry.size or result.sha256 != entry.sha256:
        report.add(
            entry.path, "modified", f"sha256 {result.sha256[:16]}…, expected {entry.sha256[:16]}…"
        )


def _check_model_signatures(
    root: Path, report: VerifyReport, regular: dict[str, int], trust: ModelTrust | None
) -> None:
    assert report.manifest is not None
    for component in report.manifest.components:
        name = (component.model_extra or {}).get("model_signature")
        if component.role not in ("model", "draft_model") or not isinstance(name, str):
            continue
        prefix = component.path + "/"
        signature_path = prefix + name
        listed = {
            e.path[len(prefix) :]: e.sha256
            for e in report.manifest.files
            if e.path.startswith(prefix)
        }
        if signature_path not in regular or name not in listed:
            report.add(signature_path, "model-signature", "the model signature file is missing")
            continue
        if not trust:
            report.model_signatures.append(
                (component.name, "unchecked", "no model-signing key or CA given")
            )
            continue
        try:
            signer = verify_model_signature((root / signature_path).read_bytes(), listed, trust)
        except ModelSignatureError as exc:
            report.add(signature_path, "model-signature", str(exc))
            report.model_signatures.append((component.name, "invalid", str(exc)))
        else:
            report.model_signatures.append((component.name, "verified", signer))
