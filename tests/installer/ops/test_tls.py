"""TLS: a locally issued server certificate really serves HTTPS that a client can verify."""

from __future__ import annotations

import http.server
import json
import ssl
import stat
import threading
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509

from controlplane.appliance.layout import Layout
from controlplane.core import signing
from controlplane.core.config import load_settings
from installer.ops.tls import TlsError, import_certificate, issue_server_certificate
from installer.provision.install import install
from tests.installer.fixtures.bundles import make_bundle
from tests.installer.fixtures.role_tasks import run_role_tasks

REPO = Path(__file__).resolve().parents[3]


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello over tls")

    def log_message(self, *args: object) -> None:
        pass


def serve_tls(tls_dir: Path) -> http.server.HTTPServer:
    server = http.server.HTTPServer(("127.0.0.1", 0), Hello)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_dir / "server.crt", tls_dir / "server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_local_ca_certificate_verifies_for_its_names(tmp_path: Path) -> None:
    cert = issue_server_certificate(tmp_path, ["localhost", "127.0.0.1", "spark-01.site.lan"])
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "spark-01.site.lan" in sans.get_values_for_type(x509.DNSName)
    for name in ("server.key", "ca.key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    server = serve_tls(tmp_path)
    try:
        url = f"https://localhost:{server.server_address[1]}/"
        trusting = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        with urllib.request.urlopen(url, context=trusting, timeout=10) as response:
            assert response.read() == b"hello over tls"
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(url, context=ssl.create_default_context(), timeout=10)
    finally:
        server.shutdown()


def test_reissue_keeps_the_ca(tmp_path: Path) -> None:
    issue_server_certificate(tmp_path, ["localhost"])
    ca = (tmp_path / "ca.crt").read_bytes()
    issue_server_certificate(tmp_path, ["localhost", "10.0.0.5"])
    assert (tmp_path / "ca.crt").read_bytes() == ca


def test_import_checks_that_key_and_certificate_belong_together(tmp_path: Path) -> None:
    site_a, site_b = tmp_path / "a", tmp_path / "b"
    issue_server_certificate(site_a, ["a.site.lan"])
    issue_server_certificate(site_b, ["b.site.lan"])
    target = tmp_path / "target"
    with pytest.raises(TlsError, match="is not the private key"):
        import_certificate(target, site_a / "server.crt", site_b / "server.key")
    imported = import_certificate(target, site_a / "server.crt", site_a / "server.key")
    assert "a.site.lan" in imported.subject.rfc4514_string()
    assert stat.S_IMODE((target / "server.key").stat().st_mode) == 0o600


def test_bad_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="not a DNS name"):
        issue_server_certificate(tmp_path, ["has space"])


def test_import_tightens_an_existing_readable_key(tmp_path: Path) -> None:
    site = tmp_path / "site"
    issue_server_certificate(site, ["a.site.lan"])
    target = tmp_path / "target"
    target.mkdir()
    (target / "server.key").write_bytes(b"old key")
    (target / "server.key").chmod(0o644)
    import_certificate(target, site / "server.crt", site / "server.key")
    assert stat.S_IMODE((target / "server.key").stat().st_mode) == 0o600
    assert (target / "server.key").read_bytes() == (site / "server.key").read_bytes()


# The activate role's TLS detection and the real template, run by ansible-playbook on this host
# with the playbook's own group_vars, exactly as an install renders controlplane.env.
RENDER_TASKS = f"""    - ansible.builtin.file:
        path: "{{{{ sparkplane_etc_dir }}}}"
        state: directory
        mode: "0755"
    - ansible.builtin.template:
        src: "{REPO}/templates/controlplane.env.j2"
        dest: "{{{{ sparkplane_etc_dir }}}}/controlplane.env"
        mode: "0640"
"""


def render_controlplane_env(tmp_path: Path, root: Path) -> Path:
    run_role_tasks(tmp_path, ["tls.yml"], {"sparkplane_root": str(root)}, then=RENDER_TASKS)
    return root / "etc/sparkplane/controlplane.env"


def test_controlplane_env_names_the_pair_only_when_both_files_exist(tmp_path: Path) -> None:
    root = tmp_path / "root"
    tls_dir = root / "etc/sparkplane/tls"
    plain = render_controlplane_env(tmp_path, root).read_text()
    assert "SPARKPLANE_TLS" not in plain

    issue_server_certificate(tls_dir, ["localhost"])
    (tls_dir / "server.crt").rename(tls_dir / "pending.crt")  # a key alone is not enough
    assert "SPARKPLANE_TLS" not in render_controlplane_env(tmp_path, root).read_text()

    (tls_dir / "pending.crt").rename(tls_dir / "server.crt")
    env_file = render_controlplane_env(tmp_path, root)
    lines = env_file.read_text().splitlines()
    assert f"SPARKPLANE_TLS_CERT={tls_dir}/server.crt" in lines
    assert f"SPARKPLANE_TLS_KEY={tls_dir}/server.key" in lines
    # The control plane accepts the rendered file as it is (production, key 0600).
    settings = load_settings(env_file)
    assert settings.environment == "production"
    assert settings.audit_wait == "durable"  # the installer's default, set in group_vars
    assert (settings.audit_retention_days, settings.audit_retention_interval_hours) == (730, 24)
    assert settings.siem_target == "" and "SPARKPLANE_SIEM" not in plain  # no feed by default
    assert (settings.tls_cert, settings.tls_key) == (tls_dir / "server.crt", tls_dir / "server.key")


def handlers_run(artifacts: Path) -> set[str]:
    """The handlers a playbook run notified (ansible-runner's `playbook_on_notify` events)."""
    events = [json.loads(p.read_text()) for p in (artifacts / "job_events").glob("*.json")]
    notified = [e["event_data"]["handler"] for e in events if e["event"] == "playbook_on_notify"]
    return {handler.rsplit(" : ", 1)[-1] for handler in notified}


@pytest.mark.slow
def test_install_after_tls_init_serves_https_and_restarts_only_the_control_plane(
    tmp_path: Path,
) -> None:
    signing.generate_keypair(tmp_path / "keys")
    bundle = make_bundle(tmp_path / "bundle", tmp_path / "keys/bundle.key")
    root = tmp_path / "root"
    key = signing.load_public_key(tmp_path / "keys/bundle.pub")
    install(bundle, root, [key], "demo", engine_port=18001, controlplane_port=18081)
    env_file = Layout.at(root).controlplane_env
    assert load_settings(env_file).tls_cert is None
    issue_server_certificate(Layout.at(root).tls, ["spark-01.lan", "10.0.0.5"])
    again = install(bundle, root, [key], "demo", engine_port=18001, controlplane_port=18081)
    settings = load_settings(env_file)
    assert settings.tls_cert == Layout.at(root).tls / "server.crt"
    assert settings.tls_key == Layout.at(root).tls / "server.key"
    # Only controlplane.env changed: the engine keeps running (docs/installer.md, HTTPS).
    assert handlers_run(again.artifacts) == {"Restart the control plane"}
