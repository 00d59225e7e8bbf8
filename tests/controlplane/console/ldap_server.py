"""A real OpenLDAP server (Debian's slapd) on loopback, with TLS from a test CA.

Started once per test session: LDAPS and LDAP (StartTLS) listeners, the ppolicy overlay (the
OpenLDAP way to disable an account), a service account, two role groups. Tests add their own
people with `add_user` (unique names), so they never depend on each other.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ldap3 import MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE, Connection, Server

from installer.ops.tls import create_local_ca, issue_server_certificate
from tests.controlplane.console.server import free_port, wait_for_port

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
BASE = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{BASE}"
ROOT_PASSWORD = "root-secret-for-tests"
SERVICE_DN = f"cn=sparkplane-svc,ou=services,{BASE}"
SERVICE_PASSWORD = "service-secret-for-tests"
PEOPLE = f"ou=people,{BASE}"
ADMINS = f"cn=sparkplane-admins,ou=groups,{BASE}"
AUDITORS = f"cn=sparkplane-auditors,ou=groups,{BASE}"
OTHERS = f"cn=payroll,ou=groups,{BASE}"
PERMANENTLY_LOCKED = "000001010000Z"  # ppolicy: locked until an administrator unlocks

CONFIG = """\
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {dir}/slapd.pid
olcTLSCACertificateFile: {tls}/ca.crt
olcTLSCertificateFile: {tls}/server.crt
olcTLSCertificateKeyFile: {tls}/server.key

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb
olcModuleLoad: ppolicy

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif
include: file:///etc/ldap/schema/cosine.ldif
include: file:///etc/ldap/schema/inetorgperson.ldif

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {base}
olcRootDN: {root_dn}
olcRootPW: {root_password}
olcDbDirectory: {dir}/data
olcDbMaxSize: 16777216
olcAccess: {{0}}to attrs=userPassword by anonymous auth by * none
olcAccess: {{1}}to * by dn.exact="{service_dn}" read by self read by * none

dn: olcOverlay={{0}}ppolicy,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcPPolicyConfig
olcOverlay: {{0}}ppolicy
olcPPolicyDefault: cn=default,ou=policies,{base}
"""

DATA = """\
dn: {base}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,{base}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{base}
objectClass: organizationalUnit
ou: groups

dn: ou=services,{base}
objectClass: organizationalUnit
ou: services

dn: ou=policies,{base}
objectClass: organizationalUnit
ou: policies

dn: cn=default,ou=policies,{base}
objectClass: device
objectClass: pwdPolicy
cn: default
pwdAttribute: userPassword
pwdLockout: TRUE

dn: {service_dn}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: sparkplane-svc
userPassword: {service_password}
""" + "".join(
    f"""
dn: {group}
objectClass: groupOfNames
cn: {group.split(",")[0].removeprefix("cn=")}
member: {{service_dn}}
"""
    for group in (ADMINS, AUDITORS, OTHERS)
)


@dataclass
class LdapServer:
    directory: Path
    tls_dir: Path
    ldaps_port: int
    ldap_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def starttls_url(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca.crt"

    def start(self) -> None:
        args = [SLAPD, "-F", str(self.directory / "slapd.d"), "-d", "0",
                "-h", f"{self.ldaps_url}/ {self.starttls_url}/"]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port(self.ldap_port, "slapd")
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None

    def root(self) -> Connection:
        server = Server("127.0.0.1", port=self.ldap_port)
        connection = Connection(server, ROOT_DN, ROOT_PASSWORD, auto_bind=True)
        return connection

    def _modify(self, dn: str, changes: dict[str, list[tuple[str, list[str]]]]) -> None:
        with self.root() as connection:
            assert connection.modify(dn, changes), connection.result

    def add_user(self, uid: str, password: str, groups: tuple[str, ...] = ()) -> str:
        dn = f"uid={uid},{PEOPLE}"
        attributes = {"cn": uid, "sn": uid, "uid": uid, "userPassword": password}
        with self.root() as connection:
            assert connection.add(dn, ["inetOrgPerson"], attributes), connection.result
        for group in groups:
            self._modify(group, {"member": [(MODIFY_ADD, [dn])]})
        return dn

    def leave_group(self, dn: str, group: str) -> None:
        self._modify(group, {"member": [(MODIFY_DELETE, [dn])]})

    def join_group(self, dn: str, group: str) -> None:
        self._modify(group, {"member": [(MODIFY_ADD, [dn])]})

    def disable(self, dn: str) -> None:
        self._modify(dn, {"pwdAccountLockedTime": [(MODIFY_REPLACE, [PERMANENTLY_LOCKED])]})

    def remove(self, dn: str) -> None:
        for group in (ADMINS, AUDITORS, OTHERS):
            with self.root() as connection:
                connection.modify(group, {"member": [(MODIFY_DELETE, [dn])]})
        with self.root() as connection:
            assert connection.delete(dn), connection.result


def start_ldap_server(directory: Path) -> LdapServer:
    if shutil.which(SLAPD) is None:
        raise RuntimeError("slapd is not installed: run `make host-tools` (Debian package slapd)")
    tls = directory / "tls"
    create_local_ca(tls)
    issue_server_certificate(tls, ["127.0.0.1", "localhost"])
    (directory / "data").mkdir(parents=True)
    (directory / "slapd.d").mkdir()
    values = {"dir": directory, "tls": tls, "base": BASE, "root_dn": ROOT_DN,
              "root_password": ROOT_PASSWORD, "service_dn": SERVICE_DN,
              "service_password": SERVICE_PASSWORD}  # fmt: skip
    (directory / "config.ldif").write_text(CONFIG.format(**values))
    (directory / "data.ldif").write_text(DATA.format(**values))
    for database, ldif in (("0", "config.ldif"), ("1", "data.ldif")):
        subprocess.run([SLAPADD, "-F", str(directory / "slapd.d"), "-n", database,
                        "-l", str(directory / ldif)], check=True, capture_output=True)  # fmt: skip
    server = LdapServer(directory, tls, free_port(), free_port())
    server.start()
    return server
