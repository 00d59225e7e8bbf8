"""Console sign-in against a real OpenLDAP server (slapd on loopback, TLS from a test CA)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.cli.admins import admins_app
from controlplane.console.directory.accounts import DirectoryRefusal, DirectoryUnavailable
from controlplane.console.directory.ldap import LdapConfig, LdapDirectory
from controlplane.core.config import Settings
from controlplane.core.security import write_private_file
from installer.ops.tls import create_local_ca
from tests.controlplane.console.client import ConsoleClient
from tests.controlplane.console.ldap_server import (
    ADMINS,
    AUDITORS,
    BASE,
    OTHERS,
    PEOPLE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    LdapServer,
)
from tests.controlplane.console.server import ConsoleServer, running_console

PASSWORD = "directory-password-1"


def ldap_settings(ldap: LdapServer, secrets_dir: Path, **overrides: object) -> dict[str, object]:
    password_file = secrets_dir / "ldap-bind-password"
    write_private_file(password_file, SERVICE_PASSWORD.encode())
    settings: dict[str, object] = {
        "ldap_url": ldap.ldaps_url, "ldap_ca_file": ldap.ca_file, "ldap_bind_dn": SERVICE_DN,
        "ldap_bind_password_file": password_file, "ldap_user_base_dn": PEOPLE,
        "ldap_user_filter": "(&(objectClass=inetOrgPerson)(uid={username}))",
        "ldap_group_base_dn": f"ou=groups,{BASE}", "ldap_admin_groups": [ADMINS],
        "ldap_auditor_groups": [AUDITORS.upper().replace(",", ", ")],  # DNs compare normalised
    }  # fmt: skip
    return settings | overrides


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, ldap_server: LdapServer
) -> Iterator[ConsoleServer]:
    settings = ldap_settings(ldap_server, tmp_path_factory.mktemp("secrets"))
    with running_console(tmp_path_factory, **settings) as running:
        yield running


def directory(ldap: LdapServer, tmp_path: Path, **overrides: object) -> LdapDirectory:
    settings = Settings(data_dir=tmp_path, **ldap_settings(ldap, tmp_path, **overrides))
    return LdapDirectory(LdapConfig.from_settings(settings))


def ldap_signin(server: ConsoleServer, name: str, password: str = PASSWORD) -> ConsoleClient:
    client = ConsoleClient(server.url)
    client.last = client.signin(name, password, method="ldap")  # type: ignore[attr-defined]
    return client


def signin_events(server: ConsoleServer, actor: str) -> list[dict[str, object]]:
    return [f for kind, _, f in server.audit_entries() if f.get("actor") == actor
            and kind in ("console.signin", "console.signin_failed")]  # fmt: skip


def test_directory_groups_map_to_roles(server: ConsoleServer, ldap_server: LdapServer) -> None:
    admin = server.unique("alice")
    admin_dn = ldap_server.add_user(admin, PASSWORD, (ADMINS, OTHERS))
    auditor = server.unique("bob")
    ldap_server.add_user(auditor, PASSWORD, (AUDITORS,))
    as_admin = ldap_signin(server, admin)
    assert as_admin.last.status_code == 303  # type: ignore[attr-defined]
    page = as_admin.get("/admins")
    assert page.status_code == 200 and f"ldap:{admin}" in page.text and admin_dn in page.text
    as_auditor = ldap_signin(server, auditor.upper())
    assert as_auditor.last.status_code == 303  # type: ignore[attr-defined]
    assert as_auditor.get("/admins").status_code == 403
    event = signin_events(server, f"ldap:{admin}")[-1]
    assert event["source"] == "ldap" and event["identity"] == admin_dn
    assert event["actor_role"] == "admin" and event["groups"] == [ADMINS]
    assert event["client"] == "127.0.0.1"
    # `sparkplane admins list` shows the same: source, role, when and from where, identity.
    listing = CliRunner().invoke(
        admins_app, ["list"], env={"SPARKPLANE_DATA_DIR": str(server.settings.data_dir)}
    )
    row = next(line for line in listing.output.splitlines() if line.startswith(f"ldap:{admin}\t"))
    fields = row.split("\t")
    assert fields[1:4] == ["admin", "ldap", "active"] and fields[5:] == ["127.0.0.1", admin_dn]
    as_admin.close()
    as_auditor.close()


def test_no_mapped_group_and_bad_passwords_are_refused(
    server: ConsoleServer, ldap_server: LdapServer
) -> None:
    outsider = server.unique("carol")
    ldap_server.add_user(outsider, PASSWORD, (OTHERS,))
    refused = ldap_signin(server, outsider)
    assert refused.last.status_code == 403  # type: ignore[attr-defined]
    assert "no group that has a role" in refused.last.text  # type: ignore[attr-defined]
    assert refused.get("/").status_code == 303
    wrong = ldap_signin(server, outsider, "not-the-password")
    unknown = ldap_signin(server, server.unique("nobody"))
    for client in (wrong, unknown):
        assert client.last.status_code == 401  # type: ignore[attr-defined]
        assert "Wrong username or password." in client.last.text  # type: ignore[attr-defined]
    reasons = [e["reason"] for e in signin_events(server, f"ldap:{outsider}")]
    assert reasons == ["no_role", "bad_credentials"]
    with server.sessions() as db:
        from controlplane.console.auth import find_user

        assert find_user(db, f"ldap:{outsider}") is None  # refused: nothing was created
    for client in (refused, wrong, unknown):
        client.close()


def test_disabled_or_removed_in_the_directory_cannot_sign_in_again(
    server: ConsoleServer, ldap_server: LdapServer
) -> None:
    disabled, removed = server.unique("dave"), server.unique("frank")
    disabled_dn = ldap_server.add_user(disabled, PASSWORD, (ADMINS,))
    removed_dn = ldap_server.add_user(removed, PASSWORD, (ADMINS,))
    first = ldap_signin(server, disabled)
    open_session = ldap_signin(server, removed)
    assert open_session.get("/tenants").status_code == 200
    ldap_server.disable(disabled_dn)
    ldap_server.remove(removed_dn)
    assert ldap_signin(server, disabled).last.status_code == 401  # type: ignore[attr-defined]
    assert ldap_signin(server, removed).last.status_code == 401  # type: ignore[attr-defined]
    # The directory said the user is gone: their open session ended with it.
    assert open_session.get("/tenants").status_code == 303
    assert signin_events(server, f"ldap:{removed}")[-1]["sessions_ended"] is True
    first.close()
    open_session.close()


def test_role_change_applies_at_next_signin_and_ends_open_sessions(
    server: ConsoleServer, ldap_server: LdapServer
) -> None:
    name = server.unique("erin")
    dn = ldap_server.add_user(name, PASSWORD, (ADMINS,))
    before = ldap_signin(server, name)
    assert before.get("/admins").status_code == 200
    ldap_server.leave_group(dn, ADMINS)
    ldap_server.join_group(dn, AUDITORS)
    after = ldap_signin(server, name)
    assert after.get("/admins").status_code == 403  # now an auditor
    assert before.get("/tenants").status_code == 303  # the admin session ended
    event = signin_events(server, f"ldap:{name}")[-1]
    assert event["actor_role"] == "auditor" and event["role_before"] == "admin"
    before.close()
    after.close()


def test_directory_down_is_a_clear_503_and_local_admins_still_sign_in(
    server: ConsoleServer, ldap_server: LdapServer
) -> None:
    name = server.unique("gina")
    ldap_server.add_user(name, PASSWORD, (ADMINS,))
    local, local_password = server.add_user("admin", stem="breakglass")
    ldap_server.stop()
    try:
        for _ in range(12):  # more than any throttle allows: nothing was checked, nothing counts
            down = ldap_signin(server, name)
            assert down.last.status_code == 503  # type: ignore[attr-defined]
            assert "directory cannot be reached" in down.last.text  # type: ignore[attr-defined]
            down.close()
        breakglass = ConsoleClient(server.url)
        assert breakglass.signin(local, local_password, method="local").status_code == 303
        breakglass.close()
    finally:
        ldap_server.start()
    event = signin_events(server, f"ldap:{name}")[-1]
    assert event["reason"] == "directory_unavailable" and "reached" in str(event["detail"])
    back = ldap_signin(server, name)
    assert back.last.status_code == 303  # type: ignore[attr-defined]
    back.close()


def test_starttls_and_a_wrong_ca(ldap_server: LdapServer, tmp_path: Path) -> None:
    name = f"henry{tmp_path.name[-6:]}".replace("_", "")
    dn = ldap_server.add_user(name, PASSWORD, (AUDITORS,))
    identity = directory(ldap_server, tmp_path, ldap_url=ldap_server.starttls_url).authenticate(
        name, PASSWORD
    )
    assert identity.external_id == dn and identity.role == "auditor"
    create_local_ca(tmp_path / "other-ca")
    other_ca = tmp_path / "other-ca" / "ca.crt"
    for url in (ldap_server.ldaps_url, ldap_server.starttls_url):
        wrong = directory(ldap_server, tmp_path, ldap_url=url, ldap_ca_file=other_ca)
        with pytest.raises(DirectoryUnavailable, match="not trusted by SPARKPLANE_LDAP_CA_FILE"):
            wrong.authenticate(name, PASSWORD)
    # An empty password never reaches the server as an unauthenticated bind.
    with pytest.raises(DirectoryRefusal):
        directory(ldap_server, tmp_path).authenticate(name, "")
    # The typed name is a value in the filter, never filter syntax: a wildcard or a closing
    # parenthesis finds nobody, though the password is the real person's.
    for typed in ("*", name[:3] + "*", f"{name})(uid=*"):
        with pytest.raises(DirectoryRefusal) as refused:
            directory(ldap_server, tmp_path).authenticate(typed, PASSWORD)
        assert refused.value.status == 401, typed


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ldap_url": "http://dc1"}, "must start with ldaps:// or ldap://"),
        ({"ldap_plaintext": True}, "contradicts an ldaps:// URL"),
        ({"ldap_bind_dn": ""}, "needs LDAP_BIND_DN"),
        ({"ldap_admin_groups": [], "ldap_auditor_groups": []}, "nobody can sign in"),
        ({"ldap_user_filter": "(uid=x)"}, "must contain {username}"),
    ],
)
def test_bad_ldap_settings_are_refused(
    ldap_server: LdapServer, tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(data_dir=tmp_path, **ldap_settings(ldap_server, tmp_path, **overrides))
