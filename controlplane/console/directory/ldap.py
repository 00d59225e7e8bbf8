"""LDAP and Active Directory sign-in with ldap3: service bind, find the user, bind as the user.

ldap3 rather than python-ldap: it is pure Python, so the offline wheelhouse carries one
`py3-none-any` wheel for any target (python-ldap is published as source only and would need a
compiler and OpenLDAP's headers on the staging side for aarch64), and it uses Python's own
`ssl`, so the site's CA file is checked the same way as everywhere else in the control plane.

Every call opens fresh connections with a timeout: sign-ins are rare, and a connection kept
open would only go stale behind a firewall. The CA is checked and the host name must match the
certificate (LDAPS or StartTLS); plain LDAP only with SPARKPLANE_LDAP_PLAINTEXT=true.
"""

from __future__ import annotations

import logging
import re
import secrets
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from ldap3 import NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from controlplane.console.directory.accounts import (
    DirectoryIdentity,
    DirectoryRefusal,
    DirectoryUnavailable,
    RoleMapping,
)
from controlplane.console.models import Source
from controlplane.core.config import Settings

log = logging.getLogger(__name__)
MAX_NAME = 256
BAD_CREDENTIALS = "Wrong username or password."


def normalise_dn(dn: str) -> str:
    """`CN=Admins, OU=Groups,DC=Example,DC=org` and `cn=admins,ou=groups,dc=example,dc=org`
    name the same entry: compare DNs in one spelling."""
    # Spaces around separators are not part of the DN (RFC 4514 readers drop them).
    compact = re.sub(r"\s*(?<!\\)([,=+])\s*", r"\1", dn.strip())
    try:
        parts = parse_dn(compact, escape=True)
    except LDAPException:
        return compact.lower()
    return ",".join(f"{attr.strip().lower()}={value.strip().lower()}" for attr, value, _ in parts)


def _read_secret(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


def describe_failure(exc: BaseException, ca_file: object) -> str:
    """What an operator reads in the audit event and the log."""
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text.upper() or "certificate verify failed" in text:
        return (
            f"the directory's TLS certificate is not trusted by SPARKPLANE_LDAP_CA_FILE ({ca_file})"
        )
    if "doesn't match" in text:
        return "the directory's TLS certificate does not name the host in SPARKPLANE_LDAP_URL"
    return f"the directory cannot be reached: {type(exc).__name__}: {text[:300]}"


@dataclass(frozen=True)
class LdapConfig:
    url: str
    starttls: bool
    ca_file: str | None
    bind_dn: str
    bind_password_file: str
    user_base: str
    user_filter: str
    group_base: str
    group_filter: str
    roles: RoleMapping
    timeout: int

    @classmethod
    def from_settings(cls, settings: Settings) -> LdapConfig:
        scheme = settings.ldap_url.partition("://")[0].lower()
        return cls(
            url=settings.ldap_url,
            starttls=scheme == "ldap" and not settings.ldap_plaintext,
            ca_file=str(settings.ldap_ca_file) if settings.ldap_ca_file else None,
            bind_dn=settings.ldap_bind_dn,
            bind_password_file=str(settings.ldap_bind_password_file),
            user_base=settings.ldap_user_base_dn,
            user_filter=settings.ldap_user_filter,
            group_base=settings.ldap_group_base_dn or settings.ldap_user_base_dn,
            group_filter=settings.ldap_group_filter,
            roles=RoleMapping.of(
                settings.ldap_admin_groups, settings.ldap_auditor_groups, normalise_dn
            ),
            timeout=settings.ldap_timeout,
        )


class LdapDirectory:
    """Blocking calls: the sign-in route runs them in a worker thread."""

    def __init__(self, config: LdapConfig) -> None:
        self.config = config
        parts = urlsplit(config.url)
        self.secure = parts.scheme.lower() == "ldaps"
        self.host = parts.hostname or ""
        self.port = parts.port or (636 if self.secure else 389)

    def _server(self) -> Server:
        # A new Server per sign-in: ldap3 marks an address that once failed as unusable, and
        # a directory that was down must be usable again as soon as it is back.
        tls = None
        if self.secure or self.config.starttls:
            tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=self.config.ca_file)
        return Server(self.host, port=self.port, use_ssl=self.secure, tls=tls, get_info=NONE,
                      connect_timeout=self.config.timeout)  # fmt: skip

    def _bind(self, server: Server, user: str, password: str) -> Connection | None:
        """An open, bound connection, or None when the credentials are refused."""
        connection = Connection(server, user=user, password=password, read_only=True,
                                receive_timeout=self.config.timeout,
                                raise_exceptions=False)  # fmt: skip
        connection.open()
        if self.config.starttls:
            connection.start_tls()
        if not connection.bind():
            connection.unbind()
            return None
        return connection

    def _service(self, server: Server) -> Connection:
        password = _read_secret(self.config.bind_password_file)
        connection = self._bind(server, self.config.bind_dn, password)
        if connection is None:
            raise DirectoryUnavailable(
                "the directory refused the service account (SPARKPLANE_LDAP_BIND_DN and "
                "SPARKPLANE_LDAP_BIND_PASSWORD_FILE)"
            )
        return connection

    def _find(self, service: Connection, name: str) -> str | None:
        query = self.config.user_filter.format(username=escape_filter_chars(name))
        service.search(self.config.user_base, query, SUBTREE, attributes=[], size_limit=2)
        dns = [
            entry["dn"] for entry in service.response or [] if entry.get("type") == "searchResEntry"
        ]
        if len(dns) > 1:
            log.warning("LDAP user filter matches %d entries for %r: refused", len(dns), name)
        return dns[0] if len(dns) == 1 else None

    def _groups(self, service: Connection, user_dn: str) -> list[str]:
        query = self.config.group_filter.format(user_dn=escape_filter_chars(user_dn))
        service.search(self.config.group_base, query, SUBTREE, attributes=[])
        return [normalise_dn(entry["dn"]) for entry in service.response or []
                if entry.get("type") == "searchResEntry"]  # fmt: skip

    def authenticate(self, name: str, password: str) -> DirectoryIdentity:
        """The identity of `name`, or DirectoryRefusal / DirectoryUnavailable."""
        name = name.strip()
        # An empty password would make an "unauthenticated bind", which many servers accept.
        if not name or not password or len(name) > MAX_NAME:
            raise DirectoryRefusal("bad_credentials", BAD_CREDENTIALS)
        try:
            server = self._server()
            service = self._service(server)
            try:
                user_dn = self._find(service, name)
                if user_dn is None:
                    # A bind like a real one, so that the answer's timing does not tell.
                    self._bind(
                        server, f"cn={secrets.token_hex(8)},{self.config.user_base}", password
                    )
                    raise DirectoryRefusal("unknown_user", BAD_CREDENTIALS)
                user = self._bind(server, user_dn, password)
                if user is None:
                    raise DirectoryRefusal("bad_credentials", BAD_CREDENTIALS)
                user.unbind()
                groups = self._groups(service, user_dn)
            finally:
                service.unbind()
        except LDAPException as exc:
            raise DirectoryUnavailable(describe_failure(exc, self.config.ca_file)) from exc
        except OSError as exc:
            raise DirectoryUnavailable(f"cannot read the bind password: {exc}") from exc
        role, granting = self.config.roles.role_for(groups)
        if role is None:
            raise DirectoryRefusal(
                "no_role", "Your directory account is in no group that has a role here; ask "
                "your directory administrator.", 403,
            )  # fmt: skip
        return DirectoryIdentity(Source.LDAP, name, user_dn, role, granting)
