"""Console sign-in with the site's directory: LDAP / Active Directory and OpenID Connect.

Each method is built once per application from its settings, on first use, so that the
control plane starts (and serves its local break-glass accounts) even when a directory is
down or misconfigured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controlplane.console.directory.ldap import LdapDirectory
    from controlplane.console.directory.oidc import OidcClient


def ldap_directory(state: Any) -> LdapDirectory | None:
    """The app's LDAP directory, or None when SPARKPLANE_LDAP_URL is not set."""
    if not state.settings.ldap_url:
        return None
    if getattr(state, "console_ldap", None) is None:
        from controlplane.console.directory.ldap import LdapConfig, LdapDirectory

        state.console_ldap = LdapDirectory(LdapConfig.from_settings(state.settings))
    directory: LdapDirectory = state.console_ldap
    return directory


def oidc_client(state: Any) -> OidcClient | None:
    """The app's OpenID Connect client, or None when SPARKPLANE_OIDC_ISSUER is not set."""
    if not state.settings.oidc_issuer:
        return None
    if getattr(state, "console_oidc", None) is None:
        from controlplane.console.directory.oidc import OidcClient, OidcConfig

        state.console_oidc = OidcClient(OidcConfig.from_settings(state.settings))
    client: OidcClient = state.console_oidc
    return client
