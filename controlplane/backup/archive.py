"""The backup file: a gzip'd tar of fixed members, written 0600, with a manifest of hashes.

    backup.json                      format, time, versions, database kind, chain summary, and
                                     the SHA-256 and size of every other member
    database.sqlite | database.pgdump
    secrets/pepper                   the API key pepper (without it every key stops working)
    secrets/audit-signing.key        the audit signing key (to go on signing checkpoints that
                                     auditors already trust) and every audit-signing*.pub
    secrets/audit-content.key        the content master key, when the data directory has one

Reading never extracts anything but these names, and every member must match its hash.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any

FORMAT = "sparkplane-backup/v1"
MANIFEST = "backup.json"
DATABASE_MEMBERS = {"sqlite": "database.sqlite", "postgresql": "database.pgdump"}
SECRETS = "secrets/"
REQUIRED_SECRETS = ("pepper", "audit-signing.key")
OPTIONAL_SECRETS = re.compile(r"^(audit-signing[\w.-]*\.pub|audit-content\.key)$")


class BackupError(RuntimeError):
    """A backup cannot be made or restored; nothing was changed. The message says why."""


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def secret_files(data_dir: Path) -> dict[str, Path]:
    """The data directory's secrets, by archive name; BackupError if a required one is missing."""
    found = {}
    for name in REQUIRED_SECRETS:
        if not (data_dir / name).is_file():
            raise BackupError(f"{data_dir / name} is missing: is {data_dir} the data directory?")
        found[SECRETS + name] = data_dir / name
    for path in sorted(data_dir.iterdir()):
        if OPTIONAL_SECRETS.match(path.name) and path.is_file():
            found[SECRETS + path.name] = path
    return found


def write_archive(out: Path, manifest: dict[str, Any], members: dict[str, Path]) -> None:
    """Write atomically (`out.partial`, fsync, rename), readable by its owner only."""
    manifest = {**manifest, "files": {name: {"sha256": file_digest(path),
                                             "size": path.stat().st_size}
                                      for name, path in members.items()}}  # fmt: skip
    partial = out.with_name(out.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
        for name, path in members.items():
            info = tar.gettarinfo(str(path), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o600
            with path.open("rb") as handle:
                tar.addfile(info, handle)
        tar.close()
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(partial, out)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o600
    tar.addfile(info, io.BytesIO(data))


def read_archive(path: Path, staging: Path) -> dict[str, Any]:
    """Extract the manifest's members into `staging` (0600) and check every hash."""
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            manifest = _manifest(tar)
            files: dict[str, dict[str, Any]] = manifest["files"]
            for name, expected in files.items():
                if not _allowed(name):
                    raise BackupError(f"{path}: unexpected member {name!r}")
                member = tar.extractfile(name)
                if member is None:
                    raise BackupError(f"{path}: {name} is not a regular file")
                target = staging / name
                target.parent.mkdir(mode=0o700, exist_ok=True)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    for chunk in iter(lambda m=member: m.read(1 << 20), b""):  # type: ignore[misc]
                        out.write(chunk)
                if file_digest(target) != expected.get("sha256"):
                    raise BackupError(f"{path}: {name} is damaged (its SHA-256 differs)")
    except (tarfile.TarError, OSError, EOFError, KeyError) as exc:
        raise BackupError(f"{path} is not a readable Sparkplane backup: {exc}") from None
    return manifest


def _manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    member = tar.extractfile(MANIFEST)
    if member is None:
        raise BackupError(f"no {MANIFEST} in the archive")
    manifest: dict[str, Any] = json.loads(member.read())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"not a {FORMAT} archive (format {manifest.get('format')!r})")
    return manifest


def _allowed(name: str) -> bool:
    if name in DATABASE_MEMBERS.values():
        return True
    secret = name.removeprefix(SECRETS)
    return name.startswith(SECRETS) and (secret in REQUIRED_SECRETS
                                         or bool(OPTIONAL_SECRETS.match(secret)))  # fmt: skip
