"""Media transfer: split a bundle into tar parts no larger than a limit, and unpack them again.

Each part is a self-contained PAX tar. A file larger than the space left is split across parts;
such pieces carry their offset in a PAX header. `index.json` (canonical JSON, signed like the
manifest, with `index.json.sig` and `signer.pub`) lists every part's size and SHA-256 and every
piece it holds, so unpack can check each part before using it and resume after an interruption.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane.core import signing
from installer.bundle.manifest import (
    CONTROL_FILES,
    ENDORSEMENT_NAME,
    MANIFEST_NAME,
    SIGNER_NAME,
    canonical_json,
    parse_manifest,
    unsafe_path_reason,
)

INDEX_NAME = "index.json"
INDEX_SIG_NAME = "index.json.sig"
MIN_PART_SIZE = 1 << 20
_TAR_TAIL = 2 * tarfile.RECORDSIZE  # end-of-archive blocks, then padding to a full record
_MIN_PIECE = 64 << 10  # not worth starting a piece in less room than this: open a new part


class PackError(RuntimeError):
    """The bundle cannot be packed, or the parts cannot be unpacked."""


def parse_size(text: str) -> int:
    """'4G', '25G', '700M', '1048576' -> bytes (binary multiples)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    clean = text.strip().upper().removesuffix("B").removesuffix("I")
    multiplier = units.get(clean[-1:], 1)
    number = clean[:-1] if clean[-1:] in units else clean
    try:
        size = int(float(number) * multiplier)
    except ValueError as exc:
        raise PackError(f"not a size: {text!r} (examples: 4G, 700M, 25G)") from exc
    if size < MIN_PART_SIZE:
        raise PackError(f"part size {text} is below the minimum of 1M")
    return size


@dataclass
class _Part:
    members: list[list[Any]] = field(default_factory=list)  # [path, offset, length, file_size]
    used: int = _TAR_TAIL


def _member_cost(path: str, length: int) -> int:
    # PAX header record + ustar header + data rounded up to the block size.
    pax = 512 + (len(path.encode()) + 200 + 511) // 512 * 512
    return pax + 512 + (length + 511) // 512 * 512


def plan_parts(files: list[tuple[str, int]], limit: int) -> list[_Part]:
    """Greedy, in path order: fill each part, splitting a file where the part runs out."""
    parts = [_Part()]
    for path, size in files:
        offset = 0
        while True:
            part = parts[-1]
            remaining = size - offset
            room = (limit - part.used - _member_cost(path, 0)) // 512 * 512
            if remaining <= room:
                length = remaining
            elif room >= _MIN_PIECE:
                length = room
            elif part.members:
                parts.append(_Part())
                continue
            else:
                raise PackError(f"part size {limit} is too small for {path}")
            part.members.append([path, offset, length, size])
            part.used += _member_cost(path, length)
            offset += length
            if offset >= size:
                break
    return [part for part in parts if part.members]


class _HashingWriter:
    def __init__(self, handle: BinaryIO) -> None:
        self.handle, self.digest, self.size = handle, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def tell(self) -> int:
        return self.size


def pack_bundle(bundle: Path, out_dir: Path, limit: int, key: Ed25519PrivateKey) -> dict[str, Any]:
    """Write the parts, then `index.json` signed with `key` (plus signer.pub); return the index."""
    manifest_bytes = (bundle / MANIFEST_NAME).read_bytes()
    manifest = parse_manifest(manifest_bytes)
    control = sorted(name for name in CONTROL_FILES if (bundle / name).is_file())
    files = [(name, (bundle / name).stat().st_size) for name in control]
    files += [(entry.path, entry.size) for entry in manifest.files]
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{manifest.name}-{manifest.version}"
    records = []
    for number, part in enumerate(plan_parts(files, limit), start=1):
        name = f"{stem}.part{number:04d}.tar"
        with open(out_dir / name, "wb") as raw:
            writer = _HashingWriter(raw)
            with tarfile.open(fileobj=writer, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for path, offset, length, file_size in part.members:
                    _add_piece(tar, bundle, path, offset, length, file_size)
        if writer.size > limit:
            raise PackError(f"internal error: {name} is {writer.size} bytes, over {limit}")
        records.append(
            {
                "file": name,
                "size": writer.size,
                "sha256": writer.digest.hexdigest(),
                "members": part.members,
            }
        )
    index = {
        "schema": 1,
        "kind": "sparkplane-bundle-parts",
        "bundle": {
            "name": manifest.name,
            "version": manifest.version,
            "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        },
        "part_size": limit,
        "parts": records,
    }
    data = canonical_json(index)
    (out_dir / INDEX_NAME).write_bytes(data)
    (out_dir / INDEX_SIG_NAME).write_text(base64.b64encode(signing.sign(key, data)).decode() + "\n")
    (out_dir / SIGNER_NAME).write_bytes(signing.public_pem(key.public_key()))
    if (bundle / ENDORSEMENT_NAME).is_file():
        shutil.copyfile(bundle / ENDORSEMENT_NAME, out_dir / ENDORSEMENT_NAME)
    return index


def _add_piece(
    tar: tarfile.TarFile, bundle: Path, path: str, offset: int, length: int, file_size: int
) -> None:
    info = tarfile.TarInfo(path)
    info.size, info.mode, info.mtime = length, 0o644, 0
    info.pax_headers = {"SPARKPLANE.offset": str(offset), "SPARKPLANE.file_size": str(file_size)}
    fd = os.open(bundle / path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        handle.seek(offset)
        tar.addfile(info, handle)


def extract_part(part_path: Path, expected: list[list[Any]], out: Path) -> None:
    """Write a verified part's pieces into `out`; members must match the signed index exactly."""
    planned = {(path, offset): (length, size) for path, offset, length, size in expected}
    seen = 0
    with tarfile.open(part_path, mode="r:") as tar:
        for info in tar:
            offset = int(info.pax_headers.get("SPARKPLANE.offset", "-1"))
            key = (info.name, offset)
            if unsafe_path_reason(info.name) is not None:  # even a trusted index gets no "../"
                raise PackError(f"{part_path.name}: unsafe member name {info.name!r}")
            if not info.isreg() or key not in planned or planned[key][0] != info.size:
                raise PackError(f"{part_path.name}: member {info.name!r} is not in the index")
            source = tar.extractfile(info)
            assert source is not None
            _write_piece(out, info.name, offset, planned[key][1], source)
            seen += 1
    if seen != len(planned):
        raise PackError(f"{part_path.name}: holds {seen} pieces, the index lists {len(planned)}")


def _write_piece(out: Path, path: str, offset: int, file_size: int, source: IO[bytes]) -> None:
    target = out / path
    for parent in reversed(target.relative_to(out).parents):
        directory = out / parent
        if directory.is_symlink():
            raise PackError(f"refusing to write through symlink {directory}")
        directory.mkdir(exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.truncate(file_size)
        handle.seek(offset)
        while chunk := source.read(1 << 20):
            handle.write(chunk)
