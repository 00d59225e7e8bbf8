"""OpenID Connect sign-in against a real provider (oidc-provider under Node, HTTPS on loopback).

The flow is driven over HTTP like a browser without JavaScript (the real browser drives it in
test_oidc_browser.py); ID tokens the provider really issued are then altered, replayed, aged or
re-signed to check that the console refuses each.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from controlplane.console.directory.accounts import DirectoryRefusal, DirectoryUnavailable
from controlplane.console.directory.oidc import OidcClient, OidcConfig
from controlplane.core.config import Settings
from installer.ops.tls import create_local_ca
from tests.controlplane.console.oidc_server import (
    ADMINS,
    AUDITORS,
    OidcProvider,
    oidc_settings,
    query_of,
)
from tests.controlplane.console.server import ConsoleServer


@pytest.fixture(scope="module")
def server(oidc_console: ConsoleServer) -> ConsoleServer:
    return oidc_console


def console_client(server: ConsoleServer) -> OidcClient:
    client = server.app.state.console_oidc
    assert isinstance(client, OidcClient)
    return client


def browser(provider: OidcProvider) -> httpx.Client:
    """One cookie jar for the console and the provider, as a browser has."""
    return provider.http(follow_redirects=False)


def sign_in(server: ConsoleServer, provider: OidcProvider, http: httpx.Client,
            login: str) -> tuple[str, httpx.Response]:  # fmt: skip
    """Start at the console, sign in at the provider, land on the callback.

    Returns (callback URL, the console's answer to it)."""
    start = http.get(f"{server.url}/console/oidc/start", params={"next": "/console/tenants"})
    assert start.status_code == 303, start.text
    callback = provider.sign_in(http, start.headers["location"], login)
    assert callback.startswith(f"{server.url}/console/oidc/callback?")
    return callback, http.get(callback)


def signin_events(server: ConsoleServer, actor: str) -> list[dict[str, Any]]:
    return [f for kind, _, f in server.audit_entries() if f.get("actor") == actor
            and kind in ("console.signin", "console.signin_failed")]  # fmt: skip


def test_sign_in_maps_the_groups_claim_and_refuses_unmapped(
    server: ConsoleServer, oidc_provider: OidcProvider
) -> None:
    admin, outsider = server.unique("olivia"), server.unique("oscar")
    oidc_provider.set_groups(admin, ["payroll", ADMINS])
    oidc_provider.set_groups(outsider, ["payroll"])
    with browser(oidc_provider) as http:
        _, landed = sign_in(server, oidc_provider, http, admin)
        assert landed.status_code == 200 and 'url=/console/tenants"' in landed.text
        assert http.get(f"{server.url}/console/tenants").status_code == 200
        users = http.get(f"{server.url}/console/admins")
        assert users.status_code == 200 and f"oidc:{admin}" in users.text
    event = signin_events(server, f"oidc:{admin}")[-1]
    assert event["source"] == "oidc" and event["groups"] == [ADMINS]
    assert event["identity"] == f"{oidc_provider.issuer} {admin}"
    with browser(oidc_provider) as http:
        _, refused = sign_in(server, oidc_provider, http, outsider)
        assert refused.status_code == 403 and "no group that has a role" in refused.text
        assert http.get(f"{server.url}/console/tenants").status_code == 303
    assert signin_events(server, f"oidc:{outsider}")[-1]["reason"] == "no_role"


def test_replayed_or_foreign_callbacks_are_refused(
    server: ConsoleServer, oidc_provider: OidcProvider
) -> None:
    name = server.unique("rita")
    oidc_provider.set_groups(name, [AUDITORS])
    with browser(oidc_provider) as http:
        callback, landed = sign_in(server, oidc_provider, http, name)
        assert landed.status_code == 200
        replayed = http.get(callback)
        assert replayed.status_code == 400 and "already used" in replayed.text
    # A callback that another browser started (login CSRF) does not sign this one in.
    with browser(oidc_provider) as attacker, browser(oidc_provider) as victim:
        start = attacker.get(f"{server.url}/console/oidc/start")
        callback = oidc_provider.sign_in(attacker, start.headers["location"], name)
        assert victim.get(callback).status_code == 400
        assert attacker.get(callback).status_code == 400  # and it is used up
    # Unknown state, and an answer claiming to come from another issuer.
    with browser(oidc_provider) as http:
        assert (
            http.get(f"{server.url}/console/oidc/callback?state=made-up&code=x").status_code == 400
        )
        start = http.get(f"{server.url}/console/oidc/start")
        callback = oidc_provider.sign_in(http, start.headers["location"], name)
        issuer = quote(oidc_provider.issuer, safe="")
        mixed_up = callback.replace(f"iss={issuer}", "iss=https%3A%2F%2Fevil")
        assert "iss=" in callback and http.get(mixed_up).status_code == 400
    reasons = [e["reason"] for e in signin_events(server, "oidc")]
    assert reasons.count("state_unknown") >= 3 and "wrong_issuer" in reasons


def provider_tokens(provider: OidcProvider, client: tuple[str, str], redirect_uri: str,
                    login: str, nonce: str) -> dict[str, Any]:  # fmt: skip
    """Tokens the provider really issues to `client` (code flow with PKCE, no console)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    query = httpx.QueryParams({
        "response_type": "code", "client_id": client[0], "redirect_uri": redirect_uri,
        "scope": "openid profile groups", "state": "s", "nonce": nonce,
        "code_challenge": challenge.rstrip(b"=").decode(), "code_challenge_method": "S256",
    })  # fmt: skip
    with provider.http(follow_redirects=False) as http:
        callback = provider.sign_in(http, f"{provider.issuer}/auth?{query}", login)
        response = http.post(f"{provider.issuer}/token", auth=client, data={
            "grant_type": "authorization_code", "code": query_of(callback)["code"],
            "redirect_uri": redirect_uri, "code_verifier": verifier})  # fmt: skip
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def _resign(token: str, claims: dict[str, Any] | None = None, key: RSAKey | None = None,
            alg: str = "RS256") -> str:  # fmt: skip
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    forger = key or RSAKey.import_key(rsa.generate_private_key(65537, 2048))
    return jwt.encode({"alg": alg, "kid": header["kid"]}, payload | (claims or {}), forger)


async def test_forged_expired_wrong_audience_and_replayed_nonce_are_refused(
    server: ConsoleServer, oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    client = console_client(server)
    name = server.unique("victor")
    oidc_provider.set_groups(name, [ADMINS])
    redirect = client.config.redirect_uri
    secret = (client.config.client_secret_file or Path("/")).read_text()
    nonce = secrets.token_urlsafe(16)
    tokens = provider_tokens(oidc_provider, (client.config.client_id, secret), redirect, name,
                             nonce)  # fmt: skip
    identity = await client.identity(tokens, nonce)  # the genuine token passes
    assert identity.username == f"oidc:{name}" and identity.role == "admin"
    id_token = tokens["id_token"]
    payload = json.loads(base64.urlsafe_b64decode(id_token.split(".")[1] + "=="))
    other = oidc_provider.register("https://other.example/cb", "https://other.example/")
    foreign = provider_tokens(oidc_provider, other, "https://other.example/cb", name, nonce)
    tampered = id_token.split(".")
    tampered[1] = base64.urlsafe_b64encode(json.dumps(payload | {"groups": [ADMINS, "x"]}).encode()
                                           ).rstrip(b"=").decode()  # fmt: skip
    cases = {
        "forged signature": _resign(id_token),
        "altered claims": ".".join(tampered),
        "no signature": id_token.rsplit(".", 1)[0] + ".",
        "wrong audience": foreign["id_token"],
    }
    for what, token in cases.items():
        with pytest.raises(DirectoryRefusal) as refused:
            await client.validate_id_token(token, nonce)
        assert refused.value.reason == "invalid_token", what
    # A provider that lists only HMAC and publishes a shared key: still asymmetric only (an
    # empty list would have been joserfc's "recommended" set, HS256 among them).
    shared = OctKey.generate_key(256, parameters={"kid": "shared"})
    documents = await client.documents()
    client._documents = replace(
        documents,
        metadata=documents.metadata | {"id_token_signing_alg_values_supported": ["HS256"]},
        jwks={"keys": [*documents.jwks["keys"], shared.as_dict(private=True)]},
    )
    hmac = jwt.encode({"alg": "HS256", "kid": "shared"}, payload, shared)
    with pytest.raises(DirectoryRefusal) as refused:
        await client.validate_id_token(hmac, nonce)
    assert refused.value.reason == "invalid_token"
    client._documents = documents
    with pytest.raises(DirectoryRefusal, match="nonce"):
        await client.validate_id_token(id_token, "the-nonce-of-another-sign-in")
    with pytest.raises(DirectoryRefusal, match="expired"):
        await client.validate_id_token(id_token, nonce, now=payload["exp"] + 3600)
    with pytest.raises(DirectoryRefusal):  # issued in the future
        await client.validate_id_token(id_token, nonce, now=payload["iat"] - 3600)


async def test_provider_outage_uses_cached_keys_and_a_wrong_ca_is_refused(
    server: ConsoleServer, oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    client = console_client(server)
    name = server.unique("uma")
    oidc_provider.set_groups(name, [AUDITORS])
    secret = (client.config.client_secret_file or Path("/")).read_text()
    nonce = secrets.token_urlsafe(16)
    tokens = provider_tokens(oidc_provider, (client.config.client_id, secret),
                             client.config.redirect_uri, name, nonce)  # fmt: skip
    await client.documents(refresh=True)  # the cache on disk is current
    oidc_provider.stop()
    try:
        # A restarted control plane, the provider down: the cached keys still validate, and
        # the sign-in page still sends browsers to the provider.
        restarted = OidcClient(client.config)
        assert (await restarted.identity(tokens, nonce)).role == "auditor"
        with httpx.Client(base_url=server.url) as http:
            assert http.get("/console/oidc/start").status_code == 303
        # Without any cache, the outage is a clear 503-class error, not a crash.
        empty = OidcClient(OidcConfig(**{**client.config.__dict__,
                                         "cache_file": tmp_path / "none.json"}))  # fmt: skip
        with pytest.raises(DirectoryUnavailable, match="cannot be reached"):
            await empty.authorization_url("s", "n", "v" * 43)
    finally:
        oidc_provider.start()  # a new signing key: the next sign-in is a key rotation
    create_local_ca(tmp_path / "other-ca")
    other_ca = tmp_path / "other-ca" / "ca.crt"
    wrong = OidcClient(OidcConfig(**{**client.config.__dict__, "ca_file": other_ca,
                                     "cache_file": tmp_path / "wrong.json"}))  # fmt: skip
    with pytest.raises(DirectoryUnavailable, match="not trusted by SPARKPLANE_OIDC_CA_FILE"):
        await wrong.documents()
    # After the rotation, a fresh sign-in works: the unknown key id made one JWKS fetch.
    with browser(oidc_provider) as http:
        _, landed = sign_in(server, oidc_provider, http, name)
        assert landed.status_code == 200, landed.text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"oidc_issuer": "http://idp.example"}, "must be an https:// URL"),
        ({"console_public_url": ""}, "needs SPARKPLANE_CONSOLE_PUBLIC_URL"),
        ({"oidc_admin_groups": [], "oidc_auditor_groups": []}, "nobody can sign in"),
    ],
)
def test_bad_oidc_settings_are_refused(
    oidc_provider: OidcProvider, tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    settings = oidc_settings(oidc_provider, "https://console.example", tmp_path, ("c", "s"))
    with pytest.raises(ValueError, match=message):
        Settings(data_dir=tmp_path, **(settings | overrides))
