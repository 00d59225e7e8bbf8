"""Support bundle: secrets planted everywhere must not leak; useful content must be there."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from controlplane.appliance.layout import Layout
from installer.ops.redact import redact_text
from installer.ops.support import build_support_bundle

# Every one of these strings is a secret that must not appear anywhere in the archive.
SECRETS = {
    "hf_token": "hf_Q7wErTyUiOpAsDfGhJkLzXcVbNm1234",
    "admin_token": "adm1n-T0ken-ZZZZ-abcdefghijklmnop",
    "db_password": "S3cretDbPass",
    "tenant_key": "sk-sp-9f8e7d6c5b4a3210ZYXWVUTSRQponmlk",
    "private_key_body": "MC4CAQAwBQYDK2VwBCIEIFakeFakeFakeFakeKeyMaterial000",
    "bearer": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    "ansible_password": "hunter2-correct-horse",
    "pepper": "pepper-value-7hX2kQ9zLm4Rt8Wp",
    # Letters only: the long-token heuristic keeps these, so only leaving the files out hides them.
    "metrics_token": "MetricsScrapeTokenWithoutAnyDigitsAtAllQwErTyUiOp",
    "site_secret": "correct horse battery staple",
    "other_token": "AnotherTokenWithNoDigitsInItAnywhereZxCvBn",
    "moved_secret": "the site moved its secrets directory",
}
# Written by the activate role (playbooks/roles/sparkplane_activate/tasks/metrics.yml).
# creds/: the site's own sparkplane_secrets_dir, as the release's install-vars.json keeps it.
SECRET_FILES = ("secrets/metrics-token", "secrets/site-extra", "api.token", "creds/bind")
PEM = f"-----BEGIN PRIVATE KEY-----\n{SECRETS['private_key_body']}\n-----END PRIVATE KEY-----\n"


def plant(root: Path) -> Layout:
    layout = Layout.at(root)
    for directory in (
        layout.etc / "tls",
        layout.etc / "secrets",
        layout.etc / "creds",
        layout.systemd,
        layout.controlplane_data,
        layout.installer_state,
        layout.artifacts / "artifacts/install-1/job_events",
        layout.var / "logs",
        layout.release("1.0.0"),
    ):
        directory.mkdir(parents=True, exist_ok=True)
    layout.current.symlink_to("releases/1.0.0")
    layout.engine_env.write_text(
        f"HF_HUB_OFFLINE=1\nVLLM_HOST_IP=127.0.0.1\nHF_TOKEN={SECRETS['hf_token']}\n"
    )
    layout.controlplane_env.write_text(
        f"SPARKPLANE_PORT=8080\nSPARKPLANE_ADMIN_TOKEN={SECRETS['admin_token']}\n"
        f"SPARKPLANE_DATABASE_URL=postgresql://sparkplane:{SECRETS['db_password']}@db:5432/sp\n"
    )
    layout.engine_args.write_text("--model\n/var/lib/sparkplane/models/tiny\n--port\n8000\n")
    (layout.etc / "tls/server.key").write_text(PEM)
    (layout.etc / "secrets/metrics-token").write_text(SECRETS["metrics_token"] + "\n")
    (layout.etc / "secrets/site-extra").write_text(SECRETS["site_secret"] + "\n")
    (layout.etc / "api.token").write_text(SECRETS["other_token"] + "\n")
    (layout.etc / "creds/bind").write_text(SECRETS["moved_secret"] + "\n")
    host = {"sparkplane_secrets_dir": str(layout.etc / "creds")}
    (layout.release("1.0.0") / "install-vars.json").write_text(
        json.dumps(
            {
                "inventory": {"sparkplane": {"hosts": {"localhost": host}}},
                "extravars": {"sparkplane_engine_profile": "demo"},
            }
        )
    )
    (layout.etc / "tls/server.crt").write_text(
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    )
    (layout.systemd / "sparkplane-engine.service").write_text("[Service]\nUser=sparkplane\n")
    (layout.controlplane_data / "sparkplane.db").write_bytes(
        b"SQLite format 3\x00" + SECRETS["tenant_key"].encode()
    )
    (layout.controlplane_data / "pepper").write_text(SECRETS["pepper"])
    (layout.controlplane_data / "audit-signing.key").write_text(PEM)
    event = {
        "kind": "installer.install",
        "phase": "succeeded",
        "api_key": SECRETS["tenant_key"],
    }
    layout.events.write_text(json.dumps(event) + "\n")
    artifacts = layout.artifacts / "artifacts/install-1"
    (artifacts / "stdout").write_text(
        f"TASK [Install]\nansible_password: {SECRETS['ansible_password']}\nok: [localhost]\n"
    )
    job_event = {"event": "runner_on_ok", "event_data": {"res": {"stdout": SECRETS["tenant_key"]}}}
    (artifacts / "job_events/1-abc.json").write_text(json.dumps(job_event))
    (layout.var / "logs/controlplane.log").write_text(
        f"GET /v1/models 200\nAuthorization: Bearer {SECRETS['bearer']}\n{PEM}"
        f"created key {SECRETS['tenant_key']} for acme\n"
    )
    return layout


@pytest.fixture
def archive(tmp_path: Path) -> tuple[dict[str, bytes], list[str]]:
    plant(tmp_path / "root")
    out = tmp_path / "support.tar.gz"
    skipped = build_support_bundle(tmp_path / "root", out)
    with tarfile.open(out) as tar:
        members = {
            m.name.split("/", 1)[1]: tar.extractfile(m).read()
            for m in tar.getmembers()
            if m.isfile()
        }
    return members, skipped


def test_no_planted_secret_leaks(archive) -> None:
    members, _ = archive
    for name, data in members.items():
        for label, secret in SECRETS.items():
            assert secret.encode() not in data, f"{label} leaked in {name}"


def test_secret_files_are_left_out_not_redacted(archive) -> None:
    members, skipped = archive
    assert not any(name.endswith((".db", ".key", "pepper")) for name in members)
    assert any("server.key" in line for line in skipped)
    for planted in SECRET_FILES:  # the secrets directory and any token file: never collected
        assert f"config/etc-sparkplane/{planted}" not in members, planted
        assert any(line.endswith(f"{planted} (secret by nature)") for line in skipped), planted
    listing = members["controlplane-data-listing.json"].decode()
    assert "sparkplane.db" in listing  # name and size only


def test_useful_content_is_kept(archive) -> None:
    members, _ = archive
    engine_env = members["config/etc-sparkplane/engine.env"].decode()
    assert "HF_HUB_OFFLINE=1" in engine_env and "VLLM_HOST_IP=127.0.0.1" in engine_env
    assert "HF_TOKEN=[REDACTED]" in engine_env
    assert "SPARKPLANE_PORT=8080" in members["config/etc-sparkplane/controlplane.env"].decode()
    assert "config/systemd/sparkplane-engine.service" in members
    assert "config/etc-sparkplane/tls/server.crt" in members
    for name in (
        "preflight.json",
        "versions.json",
        "status.json",
        "host.json",
        "installer/events.jsonl",
        "installer/ansible-artifacts/install-1/stdout",
        "logs/files/controlplane.log",
    ):
        assert name in members, name
    assert b"GET /v1/models 200" in members["logs/files/controlplane.log"]


def test_redaction_keeps_hashes_and_plain_words() -> None:
    digest = "c0ab742f68a24ef362b5529351eb13561e746b70a0f815efe7b64b570b477851"
    text = f"sha256 {digest}\nANSIBLE_RETRY_FILES_ENABLED=false\nDATABASE_PASSWORD=x\n"
    redacted = redact_text(text)
    assert digest in redacted and "ANSIBLE_RETRY_FILES_ENABLED=false" in redacted
    assert "DATABASE_PASSWORD=[REDACTED]" in redacted
