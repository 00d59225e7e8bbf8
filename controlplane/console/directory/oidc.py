"""OpenID Connect sign-in with Authlib: authorization code + PKCE, discovery, ID token checks.

Authlib builds the authorization request (S256 code challenge) and redeems the code; the ID
token's signature is checked with joserfc (Authlib's own JOSE layer) against the provider's JWKS,
asymmetric algorithms only, then Authlib's `CodeIDToken` checks issuer, audience, expiry, issue
time, nonce and `at_hash`.

The discovery document and the JWKS are cached in memory and in the data directory: fresh for
an hour, and still used for a day when the provider cannot be reached, so that a short outage of
its discovery or JWKS endpoint, or a restart during one, does not lock admins out. A token
signed with a key the cache does not know triggers one fresh fetch (key rotation).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError, MissingKeyError
from joserfc.jwk import KeySet

from controlplane.console.directory.accounts import (
    DirectoryIdentity,
    DirectoryRefusal,
    DirectoryUnavailable,
    RoleMapping,
)
from controlplane.console.models import Source
from controlplane.core.config import Settings
from controlplane.core.security import write_private_file

log = logging.getLogger(__name__)
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
              "EdDSA")  # fmt: skip
FRESH_FOR = 3600.0  # seconds the cached discovery document and JWKS are used without asking
STALE_LIMIT = 24 * 3600.0  # and how long they still serve while the provider is unreachable
KEY_REFRESH_INTERVAL = 60.0  # at most one fetch per minute for tokens with an unknown key
LEEWAY = 120  # seconds of clock difference allowed on exp, iat and nbf
CALLBACK_PATH = "/console/oidc/callback"
CACHE_FILE = "oidc-cache.json"


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret_file: Path | None
    ca_file: Path | None
    scopes: str
    username_claim: str
    groups_claim: str
    roles: RoleMapping
    timeout: float
    redirect_uri: str
    signed_out_uri: str
    cache_file: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcConfig:
        public = settings.console_public_url.rstrip("/")
        return cls(
            issuer=settings.oidc_issuer, client_id=settings.oidc_client_id,
            client_secret_file=settings.oidc_client_secret_file, ca_file=settings.oidc_ca_file,
            scopes=settings.oidc_scopes, username_claim=settings.oidc_username_claim,
            groups_claim=settings.oidc_groups_claim,
            roles=RoleMapping.of(settings.oidc_admin_groups, settings.oidc_auditor_groups),
            timeout=settings.oidc_timeout, redirect_uri=public + CALLBACK_PATH,
            signed_out_uri=public + "/console/signin",
            cache_file=settings.data_dir / CACHE_FILE,
        )  # fmt: skip


@dataclass(frozen=True)
class ProviderDocuments:
    metadata: dict[str, Any]
    jwks: dict[str, Any]
    fetched_at: float  # wall clock: the cache outlives the process


def claim(claims: dict[str, Any], path: str) -> Any:
    """`groups`, or a dotted path such as Keycloak's `realm_access.roles`."""
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


class OidcClient:
    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self._documents = self._load_cache()
        self._lock = asyncio.Lock()
        self._last_key_refresh = 0.0

    # -- the provider's documents, cached ---------------------------------------------------

    def _load_cache(self) -> ProviderDocuments | None:
        try:
            data = json.loads(self.config.cache_file.read_text())
            if data["metadata"]["issuer"] != self.config.issuer:
                return None
            return ProviderDocuments(data["metadata"], data["jwks"], float(data["fetched_at"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _save_cache(self, documents: ProviderDocuments) -> None:
        data = {"metadata": documents.metadata, "jwks": documents.jwks,
                "fetched_at": documents.fetched_at}  # fmt: skip
        try:
            write_private_file(self.config.cache_file, json.dumps(data).encode())
        except OSError as exc:
            log.warning("cannot write the OIDC cache %s: %s", self.config.cache_file, exc)

    def _http(self) -> AsyncOAuth2Client:
        secret = None
        if self.config.client_secret_file is not None:
            secret = self.config.client_secret_file.read_text().strip()
        verify: ssl.SSLContext | bool = True
        if self.config.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(self.config.ca_file))
        return AsyncOAuth2Client(
            client_id=self.config.client_id, client_secret=secret,
            token_endpoint_auth_method="client_secret_basic" if secret else "none",
            scope=self.config.scopes, redirect_uri=self.config.redirect_uri,
            code_challenge_method="S256", verify=verify, timeout=self.config.timeout,
        )  # fmt: skip

    async def _fetch(self) -> ProviderDocuments:
        discovery = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        async with self._http() as http:
            response = await http.request("GET", discovery, withhold_token=True)
            response.raise_for_status()
            metadata = response.json()
            # OpenID Connect Discovery: the document must name exactly the configured issuer.
            if metadata.get("issuer") != self.config.issuer:
                raise ValueError(f"discovery names issuer {metadata.get('issuer')!r}")
            response = await http.request("GET", metadata["jwks_uri"], withhold_token=True)
            response.raise_for_status()
            return ProviderDocuments(metadata, response.json(), time.time())

    async def documents(self, refresh: bool = False) -> ProviderDocuments:
        cached = self._documents
        if not refresh and cached is not None and time.time() - cached.fetched_at < FRESH_FOR:
            return cached
        async with self._lock:
            try:
                fetched = await self._fetch()
            except (httpx2.HTTPError, OSError, ValueError, KeyError, OAuthError) as exc:
                cached = self._documents
                if cached is not None and time.time() - cached.fetched_at < STALE_LIMIT:
                    log.warning("OIDC provider unreachable, using its cached keys: %s", exc)
                    return cached
                raise DirectoryUnavailable(self._describe(exc)) from exc
            self._documents = fetched
            self._save_cache(fetched)
            return fetched

    def _describe(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        if "CERTIFICATE_VERIFY_FAILED" in text.upper():
            return (f"the identity provider's TLS certificate is not trusted by "
                    f"SPARKPLANE_OIDC_CA_FILE={self.config.ca_file}")  # fmt: skip
        return f"the identity provider cannot be reached: {type(exc).__name__}: {text[:300]}"

    # -- the flow ------------------------------------------------------------------------------

    async def authorization_url(self, state: str, nonce: str, code_verifier: str) -> str:
        metadata = (await self.documents()).metadata
        async with self._http() as http:
            url, _ = http.create_authorization_url(
                metadata["authorization_endpoint"], state=state, nonce=nonce,
                code_verifier=code_verifier,
            )  # fmt: skip
        return str(url)

    async def exchange(self, code: str, code_verifier: str) -> dict[str, Any]:
        """Redeem the authorization code (with the PKCE verifier) for the tokens."""
        metadata = (await self.documents()).metadata
        try:
            async with self._http() as http:
                token = await http.fetch_token(
                    metadata["token_endpoint"], grant_type="authorization_code", code=code,
                    code_verifier=code_verifier,
                )  # fmt: skip
        except OAuthError as exc:
            raise DirectoryRefusal(
                "code_refused", f"The identity provider refused the sign-in code ({exc.error}); "
                "start again.",
            ) from exc  # fmt: skip
        except (httpx2.HTTPError, OSError) as exc:
            raise DirectoryUnavailable(self._describe(exc)) from exc
        return dict(token)

    async def _decode(self, id_token: str) -> jwt.Token:
        documents = await self.documents()
        for attempt in range(2):
            supported = documents.metadata.get("id_token_signing_alg_values_supported", ["RS256"])
            # Never empty: joserfc would take an empty list as "its recommended set", HMAC too.
            algorithms = [alg for alg in supported if alg in ASYMMETRIC] or ["RS256"]
            try:
                keys = KeySet.import_key_set(documents.jwks)  # type: ignore[arg-type]
                return jwt.decode(id_token, keys, algorithms)
            except (InvalidKeyIdError, MissingKeyError):
                # A key the cache does not know: the provider may have rotated its keys.
                now = time.monotonic()
                if attempt or now - self._last_key_refresh < KEY_REFRESH_INTERVAL:
                    raise
                self._last_key_refresh = now
                documents = await self.documents(refresh=True)
        raise AssertionError("unreachable")

    async def validate_id_token(self, id_token: str, nonce: str, access_token: str | None = None,
                                now: int | None = None) -> dict[str, Any]:  # fmt: skip
        """The ID token's claims once signature, issuer, audience, expiry and nonce hold."""
        try:
            token = await self._decode(id_token)
            options = {
                "iss": {"essential": True, "value": self.config.issuer},
                "aud": {"essential": True, "value": self.config.client_id},
                "nonce": {"essential": True, "value": nonce},
            }
            params = {"nonce": nonce, "client_id": self.config.client_id}
            if access_token:
                params["access_token"] = access_token
            claims = CodeIDToken(token.claims, token.header, options, params)
            claims.validate(now=now, leeway=LEEWAY)
        except (JoseError, ValueError) as exc:
            detail = getattr(exc, "description", "") or str(exc) or type(exc).__name__
            raise DirectoryRefusal(
                "invalid_token", f"The identity provider's ID token was refused: {detail}.",
            ) from exc  # fmt: skip
        return dict(claims)

    async def identity(self, token: dict[str, Any], nonce: str) -> DirectoryIdentity:
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise DirectoryRefusal("invalid_token", "The identity provider sent no ID token.")
        claims = await self.validate_id_token(id_token, nonce, token.get("access_token"))
        name = claim(claims, self.config.username_claim) or claims["sub"]
        groups = claim(claims, self.config.groups_claim) or []
        if isinstance(groups, str):
            groups = [groups]
        role, granting = self.config.roles.role_for(str(g).strip() for g in groups)
        if role is None:
            raise DirectoryRefusal(
                "no_role", "Your account at the identity provider is in no group that has a role "
                "here; ask your directory administrator.", 403, name=str(name),
            )  # fmt: skip
        return DirectoryIdentity(Source.OIDC, str(name), f"{claims['iss']} {claims['sub']}",
                                 role, granting)  # fmt: skip

    async def logout_url(self) -> str | None:
        """RP-initiated logout at the provider, when it offers it (cached documents suffice)."""
        try:
            metadata = (await self.documents()).metadata
        except DirectoryUnavailable:
            return None
        endpoint = metadata.get("end_session_endpoint")
        if not endpoint:
            return None
        query = urlencode({"client_id": self.config.client_id,
                           "post_logout_redirect_uri": self.config.signed_out_uri})  # fmt: skip
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"
