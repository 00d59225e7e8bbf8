"""The installer's directory sign-in variables, rendered by a real ansible-playbook run of the
activate role's tasks and template, then read by the control plane's own settings."""

from __future__ import annotations

import stat
from pathlib import Path

from controlplane.core.config import load_settings
from installer.ops.tls import create_local_ca
from tests.installer.fixtures.role_tasks import run_role_tasks

REPO = Path(__file__).resolve().parents[2]
BIND_PASSWORD = "vaulted-bind-password-do-not-log"
CLIENT_SECRET = "vaulted-client-secret-do-not-log"
ADMINS = "cn=Sparkplane Admins,ou=Groups,dc=example,dc=org"
AUDITORS = "cn=auditors,ou=groups,dc=example,dc=org"

# After the role's tasks, the real template, as an install renders controlplane.env.
RENDER_TASKS = f"""    - ansible.builtin.template:
        src: "{REPO}/templates/controlplane.env.j2"
        dest: "{{{{ sparkplane_etc_dir }}}}/controlplane.env"
        mode: "0640"
"""


def test_directory_variables_render_settings_and_0600_secrets(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/sparkplane").mkdir(parents=True)
    create_local_ca(tmp_path / "site-ca")
    ca = tmp_path / "site-ca" / "ca.crt"
    variables = {
        "sparkplane_root": str(root),
        "sparkplane_controlplane_public_url": "https://sparkplane.example.org",
        "sparkplane_controlplane_ldap_url": "ldaps://dc1.example.org",
        "sparkplane_controlplane_ldap_ca_file": str(ca),
        "sparkplane_controlplane_ldap_bind_dn": "cn=svc,ou=services,dc=example,dc=org",
        "sparkplane_controlplane_ldap_bind_password": BIND_PASSWORD,
        "sparkplane_controlplane_ldap_user_base_dn": "ou=people,dc=example,dc=org",
        "sparkplane_controlplane_ldap_user_filter":
            "(&(objectCategory=person)(sAMAccountName={username}))",
        "sparkplane_controlplane_ldap_group_filter": "(member:1.2.840.113556.1.4.1941:={user_dn})",
        "sparkplane_controlplane_ldap_admin_groups": [ADMINS],
        "sparkplane_controlplane_ldap_auditor_groups": [AUDITORS, "cn=b,dc=example,dc=org"],
        "sparkplane_controlplane_oidc_issuer": "https://idp.example.org/realms/site",
        "sparkplane_controlplane_oidc_client_id": "sparkplane",
        "sparkplane_controlplane_oidc_client_secret": CLIENT_SECRET,
        "sparkplane_controlplane_oidc_ca_file": str(ca),
        "sparkplane_controlplane_oidc_groups_claim": "realm_access.roles",
        "sparkplane_controlplane_oidc_admin_groups": ["sparkplane-admin"],
    }  # fmt: skip
    result = run_role_tasks(tmp_path, ["tls.yml", "directory.yml", "metrics.yml"], variables,
                            then=RENDER_TASKS, verbose=True)  # fmt: skip
    assert BIND_PASSWORD not in result.stdout and CLIENT_SECRET not in result.stdout  # no_log

    secrets = root / "etc/sparkplane/secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    for name, value in (
        ("ldap-bind-password", BIND_PASSWORD),
        ("oidc-client-secret", CLIENT_SECRET),
    ):
        assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o600
        assert (secrets / name).read_text().strip() == value
    token = (secrets / "metrics-token").read_text().strip()
    assert stat.S_IMODE((secrets / "metrics-token").stat().st_mode) == 0o600
    assert len(token) == 48 and token not in result.stdout  # issue 17, finding 6
    settings = load_settings(root / "etc/sparkplane/controlplane.env")  # production checks pass
    assert settings.metrics_token_file == secrets / "metrics-token"
    assert settings.ldap_url == "ldaps://dc1.example.org" and settings.ldap_ca_file == ca
    assert settings.ldap_bind_password_file == secrets / "ldap-bind-password"
    assert settings.ldap_admin_groups == [ADMINS]
    assert settings.ldap_auditor_groups == [AUDITORS, "cn=b,dc=example,dc=org"]
    assert settings.ldap_group_filter == "(member:1.2.840.113556.1.4.1941:={user_dn})"
    assert settings.oidc_client_secret_file == secrets / "oidc-client-secret"
    assert settings.oidc_groups_claim == "realm_access.roles"
    assert settings.console_public_url == "https://sparkplane.example.org"
