"""Captured content end to end: calls through the gateway, read by an auditor in the console
(audited), exported decrypted with `audit export --content` (which verifies), then erased: the
content is unreadable and the chain and the export still verify."""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import openai

from tests.controlplane.console.client import ConsoleClient
from tests.controlplane.console.server import ConsoleServer
from tests.controlplane.console.test_tenant_pages import create_key, create_tenant

REPO = Path(__file__).resolve().parents[3]
SPARKPLANE = Path(sys.executable).with_name("sparkplane")


def sparkplane(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKPLANE_")}
    env["SPARKPLANE_DATA_DIR"] = str(data_dir)
    return subprocess.run([str(SPARKPLANE), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def export_with_content(server: ConsoleServer, tenant: str, out: Path) -> list[dict[str, Any]]:
    """Export the tenant's entries with --content, verify it; returns its content lines."""
    data_dir = server.settings.data_dir
    done = sparkplane(data_dir, "audit", "export", "--reason", "DSAR 12", "--tenant", tenant,
                      "--out", str(out), "--content")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "with captured content" in done.stdout
    verified = sparkplane(data_dir, "audit", "verify", str(out),
                          "--pubkey", str(data_dir / "audit-signing.pub"))  # fmt: skip
    assert verified.returncode == 0 and verified.stdout.strip().endswith("VALID"), verified.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    return [line["content"] for line in lines if "content" in line]


def test_read_export_and_erase_captured_content(
    admin: ConsoleClient, auditor: ConsoleClient, server: ConsoleServer, tmp_path: Path
) -> None:
    tenant = create_tenant(admin, server, capture_content="on")
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=create_key(admin, tenant),
                        max_retries=0)  # fmt: skip
    marker = "console-marker-" + uuid.uuid4().hex
    chunks = sdk.chat.completions.create(
        model="sim-model", messages=[{"role": "user", "content": marker}], max_tokens=6,
        stream=True,
    )  # fmt: skip
    answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # The SDK leaves at [DONE], which may come before the call's entry is written.
    deadline = time.monotonic() + 10
    while not [e for e in server.audit_entries("api.completion") if e[1] == tenant]:
        assert time.monotonic() < deadline, "no api.completion entry"
        time.sleep(0.05)

    page = auditor.get(f"/tenants/{tenant}/content")
    assert page.status_code == 200 and marker in page.text
    assert html.escape(answer) in page.text
    _, read_tenant, fields = server.audit_entries("console.content_read")[-1]
    assert (read_tenant, fields["actor"], fields["actor_role"]) == (tenant, auditor.username,
                                                                    "auditor")  # fmt: skip
    assert len(fields["request_ids"]) == 1

    (content,) = export_with_content(server, tenant, tmp_path / "before.jsonl")
    assert content["request_id"] == fields["request_ids"][0]
    assert content["record"]["request"]["messages"][0]["content"] == marker
    assert content["record"]["choices"][0]["text"] == answer

    # A content line that is not the sealed blob the chain names fails verification.
    tampered = tmp_path / "tampered.jsonl"
    text = (tmp_path / "before.jsonl").read_text()
    tampered.write_text(text.replace(content["sealed"], content["sealed"][:-6] + "AAAAA="))
    pub = server.settings.data_dir / "audit-signing.pub"
    refused = sparkplane(server.settings.data_dir, "audit", "verify", str(tampered),
                         "--pubkey", str(pub), "--json")  # fmt: skip
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["problems"][0]["kind"] == "content_mismatch"
    portable = [sys.executable, str(REPO / "controlplane" / "audit" / "sparkplane_verify.py"),
                "export"]  # fmt: skip
    for path, status in ((tmp_path / "before.jsonl", 0), (tampered, 1)):
        checked = subprocess.run([*portable, str(path), "--pubkey", str(pub)],
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
        assert checked.returncode == status, checked.stdout + checked.stderr

    erased = admin.post(f"/tenants/{tenant}/erase", {"confirm_name": tenant},
                        page=f"/tenants/{tenant}")  # fmt: skip
    assert erased.status_code == 303
    page = auditor.get(f"/tenants/{tenant}/content")
    assert page.status_code == 200 and marker not in page.text and "erased" in page.text
    (after,) = export_with_content(server, tenant, tmp_path / "after.jsonl")
    assert after["record"] is None and after["unreadable"] == "erased"
    assert after["sealed"] == content["sealed"]  # still there, never to be opened again
    live = sparkplane(server.settings.data_dir, "audit", "verify", "--live", "--pubkey", str(pub))
    assert live.returncode == 0 and live.stdout.strip().endswith("VALID"), live.stdout


def test_content_page_of_an_unknown_tenant_is_404(auditor: ConsoleClient) -> None:
    assert auditor.get("/tenants/no-such-tenant/content").status_code == 404
