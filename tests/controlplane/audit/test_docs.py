"""The independent verifier printed in docs/audit.md works on a real export."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

from controlplane.audit.export import export_audit

DOC = Path(__file__).resolve().parents[3] / "docs" / "audit.md"


def doc_script(tmp_path: Path) -> Path:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    (script,) = [block for block in blocks if "load_pem_public_key" in block]
    path = tmp_path / "verify_export.py"
    path.write_text(script)
    return path


async def test_documented_script_accepts_an_export_and_rejects_a_tampered_one(
    writer, sqlite_engine, tmp_path
):
    await asyncio.gather(*(writer.record("api.request", tenant="t", n=i) for i in range(25)))
    out = tmp_path / "export.jsonl"
    await export_audit(sqlite_engine, writer, out, reason="docs", tenant="t")
    script, pub = doc_script(tmp_path), tmp_path / "audit-signing.pub"
    done = subprocess.run([sys.executable, script, out, pub], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "valid: entries 1..26", done.stderr
    out.write_bytes(out.read_bytes().replace(b'"n":7}', b'"n":8}', 1))
    done = subprocess.run([sys.executable, script, out, pub], capture_output=True, text=True)
    assert done.returncode != 0 and "data 8" in done.stderr
