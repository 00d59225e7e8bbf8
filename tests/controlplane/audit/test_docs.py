"""The portable verifier printed in docs/audit.md is the shipped file, and it works where only
Python and `cryptography` are installed: exports (key rotation, retention cut, withheld data),
the SIEM's copy of the feed, and bundles; every verdict agrees with Sparkplane's own verifiers."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cryptography
import orjson
import pytest

from controlplane.audit import AuditWriter
from controlplane.audit.export import export_audit
from controlplane.audit.feed.sender import SiemFeed
from controlplane.audit.feed.transports import make_transport, parse_target
from controlplane.audit.retention import apply_retention
from controlplane.audit.verify import verify_export
from controlplane.core import signing
from installer.bundle.build import build_bundle
from installer.bundle.signature import make_endorsement
from installer.bundle.verify import verify_bundle

REPO = Path(__file__).resolve().parents[3]
DOC = REPO / "docs" / "audit.md"
VERIFIER = REPO / "controlplane" / "audit" / "sparkplane_verify.py"


def test_the_docs_print_the_verifier_byte_for_byte() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    (printed,) = [block for block in blocks if "sparkplane_verify.py:" in block]
    assert printed == VERIFIER.read_text()


@pytest.fixture(scope="session")
def clean_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding `cryptography` (and what it needs) and nothing of Sparkplane's."""
    venv = tmp_path_factory.mktemp("auditor") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
         "--disable-pip-version-check", f"cryptography=={cryptography.__version__}"],
        check=True, capture_output=True,
    )  # fmt: skip
    (site,) = (venv / "lib").glob("python*/site-packages")
    packages = {path.name.split("-")[0].split(".")[0] for path in site.iterdir()}
    assert packages <= {"cryptography", "cffi", "_cffi_backend", "pycparser"}, packages
    return python


@pytest.fixture
def auditor(clean_python: Path, tmp_path: Path):
    """Run the verifier as an auditor would: a copy of the file, isolated mode, a foreign cwd."""
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    script = laptop / "sparkplane_verify.py"
    shutil.copyfile(VERIFIER, script)
    env = {"PATH": os.environ["PATH"], "HOME": str(laptop)}

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([clean_python, "-I", script, *map(str, args)], cwd=laptop, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    return run


@pytest.fixture
async def rotated_export(sqlite_engine, tmp_path) -> tuple[Path, Path, Path]:
    """An export that starts at a retention cut, crosses a key rotation and withholds data;
    returns (export, old public key, new public key)."""
    key = tmp_path / "audit-signing.key"
    writer = AuditWriter(sqlite_engine, key, checkpoint_every=10)
    await writer.start()
    try:
        for i in range(15):
            await writer.record("api.request", tenant=("acme", "beta")[i % 2], n=i)
        apply_retention(sqlite_engine, writer.signer, now=datetime.now(UTC) + timedelta(days=731))
        for i in range(12):
            await writer.record("api.request", tenant=("acme", "beta")[i % 2], n=i)
        old_pub = tmp_path / "old.pub"
        shutil.copyfile(tmp_path / "audit-signing.pub", old_pub)
        await writer.rotate_key()
        for i in range(7):
            await writer.record("admin.tenant_update", tenant="acme", actor="root", n=i)
        out = tmp_path / "export.jsonl"
        await export_audit(sqlite_engine, writer, out, reason="yearly audit", tenant="acme")
    finally:
        await writer.close()
    return out, old_pub, tmp_path / "audit-signing.pub"


async def test_exports_verify_with_either_key_and_tampering_is_named(auditor, rotated_export):
    out, old_pub, new_pub = rotated_export
    for pub in (old_pub, new_pub):
        done = auditor("export", out, "--pubkey", pub)
        assert done.returncode == 0 and done.stdout.startswith("VALID export: entries 16.."), (
            done.stdout + done.stderr
        )
        assert verify_export(out, [pub]).valid
    lines = out.read_bytes().splitlines(keepends=True)
    target = next(i for i, line in enumerate(lines) if b'"n":3' in line and b'"d":{' in line)
    seq = orjson.loads(lines[target])["e"]["seq"]
    cases = {
        "data": lines[target].replace(b'"n":3', b'"n":4'),
        "dropped": b"",
    }
    for name, replacement in cases.items():
        tampered = out.with_name(f"{name}.jsonl")
        tampered.write_bytes(b"".join([*lines[:target], replacement, *lines[target + 1 :]]))
        done = auditor("export", tampered, "--pubkey", old_pub)
        assert done.returncode == 1 and f"entry {seq + (name == 'dropped')}" in done.stderr, (
            name, done.stderr,
        )  # fmt: skip
        assert not verify_export(tampered, [old_pub]).valid
    truncated = out.with_name("truncated.jsonl")
    truncated.write_bytes(b"".join(lines[:-4]))
    done = auditor("export", truncated, "--pubkey", old_pub)
    assert done.returncode == 1 and "INVALID" in done.stderr
    assert not verify_export(truncated, [old_pub]).valid
    stranger = out.with_name("stranger.pub")
    stranger.write_bytes(signing.public_pem(signing.Ed25519PrivateKey.generate().public_key()))
    done = auditor("export", out, "--pubkey", stranger)
    assert done.returncode == 1 and "no trusted key" in done.stderr
    assert auditor("export", out.with_name("missing.jsonl"), "--pubkey", old_pub).returncode == 2


async def test_the_siem_copy_is_checked_against_the_export(
    auditor, writer, sqlite_engine, tmp_path
):
    copy = tmp_path / "siem.jsonl"
    feed = SiemFeed(sqlite_engine, make_transport(parse_target(f"file://{copy}")))
    writer.on_commit(feed.wake)
    feed.start()
    try:
        for i in range(30):
            await writer.record("api.request", tenant="acme", n=i)
        out = tmp_path / "export.jsonl"
        await export_audit(sqlite_engine, writer, out, reason="siem check", tenant="beta")
        for _ in range(100):
            if feed.status.delivered_seq >= 31 and feed.status.backlog == 0:
                break
            await asyncio.sleep(0.1)
    finally:
        await asyncio.to_thread(feed.stop)
    pub = tmp_path / "audit-signing.pub"
    # A SIEM stores what it got, duplicates included, and its copy carries the data the export
    # withheld (the export filtered on another tenant).
    lines = copy.read_bytes().splitlines(keepends=True)
    copy.write_bytes(b"".join(lines + lines[3:6]))
    done = auditor("export", out, "--pubkey", pub, "--siem-copy", copy)
    assert done.returncode == 0 and "all 31 entries of the export" in done.stdout, done.stderr
    changed = tmp_path / "changed.jsonl"
    changed.write_bytes(b"".join(lines).replace(b'"n":7}', b'"n":8}', 1))
    done = auditor("export", out, "--pubkey", pub, "--siem-copy", changed)
    assert done.returncode == 1 and "entry 8's data was changed" in done.stderr
    gap = tmp_path / "gap.jsonl"
    gap.write_bytes(b"".join(line for line in lines if b'"n":11}' not in line))
    done = auditor("export", out, "--pubkey", pub, "--siem-copy", gap)
    assert done.returncode == 1 and "lacks 1 entries, the first is 12" in done.stderr


SPEC = """\
schema: 1
name: tiny
version: "1.0"
platform: {arch: x86_64, accelerator: cpu, python: "3.11"}
components:
  - {name: site-files, role: files, source: site, dest: extras/site}
"""


@pytest.fixture(scope="module")
def bundle_parts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """(bundle signed by a new key that the old one endorsed, old public key, new key dir)."""
    root = tmp_path_factory.mktemp("bundle-src")
    (root / "site" / "sub").mkdir(parents=True)
    (root / "site" / "a.txt").write_text("site notes\n")
    (root / "site" / "sub" / "b.bin").write_bytes(bytes(range(256)) * 64)
    (root / "tiny.yaml").write_text(SPEC)
    old_key, old_pub = signing.generate_keypair(root / "old")
    new_key, new_pub = signing.generate_keypair(root / "new")
    (root / "new" / "signer.endorsement").write_bytes(
        make_endorsement(signing.load_private_key(old_key), signing.load_public_key(new_pub))
    )
    bundle = build_bundle(root / "tiny.yaml", new_key, root / "bundle").path
    yield bundle, old_pub, new_pub


def test_bundles_verify_and_every_tampering_is_refused(auditor, bundle_parts, tmp_path):
    built, old_pub, new_pub = bundle_parts
    done = auditor("bundle", built, "--trust", old_pub)
    assert done.returncode == 0 and "endorsed by" in done.stdout, done.stderr
    assert auditor("bundle", built, "--trust", new_pub).returncode == 0
    stranger = tmp_path / "stranger.pub"
    signing.generate_keypair(tmp_path / "stranger")
    shutil.copyfile(tmp_path / "stranger" / "bundle.pub", stranger)

    def tamper(change) -> Path:
        copy = Path(shutil.copytree(built, tmp_path / f"b{len(list(tmp_path.iterdir()))}"))
        change(copy)
        return copy

    cases = {
        "modified": lambda b: (b / "extras/site/sub/b.bin").write_bytes(b"\0" * 16384),
        "not in the manifest": lambda b: (b / "extras/site/extra.txt").write_text("x"),
        "missing": lambda b: (b / "extras/site/a.txt").unlink(),
        "symlink": lambda b: (b / "extras/link").symlink_to("/etc/passwd"),
        "does not match": lambda b: (b / "manifest.json").write_bytes(
            (b / "manifest.json").read_bytes().replace(b'"1.0"', b'"1.1"')
        ),
    }
    trusted = [signing.load_public_key(old_pub)]
    for problem, change in cases.items():
        copy = tamper(change)
        done = auditor("bundle", copy, "--trust", old_pub)
        assert done.returncode == 1 and problem in done.stderr, (problem, done.stderr)
        assert not verify_bundle(copy, trusted).ok, problem
    done = auditor("bundle", built, "--trust", stranger)
    assert done.returncode == 1 and "neither trusted nor endorsed" in done.stderr
