"""`sparkplane bundle unpack`: check the signed part index and every part, then extract, resumably.

Nothing is written until every part still to unpack has been checked against the signed index.
Progress is kept next to the output (`OUT.unpack-state.json`, not inside the bundle), so a re-run
after an interruption skips parts already unpacked; the finished bundle is then fully verified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controlplane.core import signing
from installer.bundle.hashing import Digest, ProgressSink, hash_tree_files
from installer.bundle.manifest import ENDORSEMENT_NAME, SIGNER_NAME
from installer.bundle.pack import INDEX_NAME, INDEX_SIG_NAME, PackError, extract_part
from installer.bundle.report import VerifyReport
from installer.bundle.signature import check_endorsement
from installer.bundle.verify import verify_bundle


class PartsError(PackError):
    """Some parts are missing or damaged; `problems` names each (part file, problem, detail)."""

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        self.problems = problems
        super().__init__(
            "; ".join(f"{name}: {problem} ({detail})" for name, problem, detail in problems)
        )


def read_index(
    parts_dir: Path, trusted: Sequence[Ed25519PublicKey], revoked: Collection[str]
) -> tuple[dict[str, Any], bytes]:
    """The signed part index, or PackError saying why it cannot be trusted."""
    try:
        data = (parts_dir / INDEX_NAME).read_bytes()
        signature = base64.b64decode(
            (parts_dir / INDEX_SIG_NAME).read_bytes().strip(), validate=True
        )
        signer = signing.parse_public_key(
            (parts_dir / SIGNER_NAME).read_bytes(), source=SIGNER_NAME
        )
    except FileNotFoundError as exc:
        raise PackError(f"{parts_dir}: {Path(exc.filename).name} is missing") from exc
    except (binascii.Error, signing.SigningKeyError) as exc:
        raise PackError(f"{parts_dir}: unreadable index signature or signer: {exc}") from exc
    if not signing.verify(signer, data, signature):
        raise PackError(f"{parts_dir}/{INDEX_NAME}: bad signature")
    fingerprint = signing.fingerprint(signer)
    usable = [key for key in trusted if signing.fingerprint(key) not in revoked]
    endorsement = parts_dir / ENDORSEMENT_NAME
    if fingerprint in revoked:
        raise PackError(f"index signer {fingerprint} is revoked")
    if not any(signing.same_key(signer, key) for key in usable) and not (
        endorsement.is_file() and check_endorsement(endorsement.read_bytes(), signer, usable)
    ):
        raise PackError(f"index signer {fingerprint} is not a trusted key")
    try:
        index = json.loads(data)
        well_formed = index["kind"] == "sparkplane-bundle-parts" and index["schema"] == 1
        well_formed = well_formed and all(
            {"file", "size", "sha256", "members"} <= set(p) for p in index["parts"]
        )
    except (ValueError, KeyError, TypeError):
        well_formed = False
    if not well_formed:
        raise PackError(f"{parts_dir}/{INDEX_NAME}: not a sparkplane part index")
    return index, data


def check_parts(
    parts_dir: Path, parts: list[dict[str, Any]], progress: ProgressSink | None = None
) -> list[tuple[str, str, str]]:
    """Every problem with the given parts: missing, wrong size, wrong hash."""
    problems, jobs = [], []
    for part in parts:
        path = parts_dir / part["file"]
        if path.is_symlink() or not path.is_file():
            problems.append((part["file"], "missing", "part file not found"))
        elif (size := path.stat().st_size) != part["size"]:
            kind = "truncated" if size < part["size"] else "modified"
            problems.append((part["file"], kind, f"{size} bytes, expected {part['size']}"))
        else:
            jobs.append((part["file"], part["size"]))
    results = hash_tree_files(parts_dir, jobs, progress=progress)
    expected = {part["file"]: part["sha256"] for part in parts}
    for name, result in sorted(results.items()):
        if isinstance(result, OSError):
            problems.append((name, "unreadable", str(result)))
        elif isinstance(result, Digest) and result.sha256 != expected[name]:
            problems.append((name, "modified", "sha256 does not match the signed index"))
    return sorted(problems)


def unpack(
    parts_dir: Path,
    out: Path,
    trusted: Sequence[Ed25519PublicKey],
    revoked: Collection[str] = (),
    *,
    progress: Callable[[], ProgressSink | None] = lambda: None,
    log: Callable[[str], None] = lambda _: None,
) -> VerifyReport:
    index, index_data = read_index(parts_dir, trusted, revoked)
    state_path = out.parent / (out.name + ".unpack-state.json")
    index_sha = hashlib.sha256(index_data).hexdigest()
    done = _load_state(state_path, out, index_sha)
    todo = [part for part in index["parts"] if part["file"] not in done]
    if done:
        log(f"resuming: {len(done)} part(s) already unpacked, {len(todo)} to go")
    problems = check_parts(parts_dir, todo, progress())
    if problems:
        raise PartsError(problems)
    out.mkdir(parents=True, exist_ok=True)
    for part in todo:
        log(f"unpacking {part['file']}")
        extract_part(parts_dir / part["file"], part["members"], out)
        done.append(part["file"])
        state_path.write_text(json.dumps({"index_sha256": index_sha, "done": done}))
    report = verify_bundle(out, trusted, revoked=revoked, progress=progress())
    if report.ok:
        state_path.unlink(missing_ok=True)
    return report


def _load_state(state_path: Path, out: Path, index_sha: str) -> list[str]:
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        if state.get("index_sha256") != index_sha:
            raise PackError(f"{out} holds a partial unpack of different parts ({state_path})")
        return list(state.get("done", []))
    if out.exists() and any(out.iterdir()):
        raise PackError(f"{out} exists and is not empty; refusing to unpack over it")
    return []
