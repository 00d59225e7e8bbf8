"""Tenants and keys through the console's forms, against a real server and the simulator."""

from __future__ import annotations

import re
from datetime import timedelta

import openai
import pytest

from controlplane.audit.content import ContentShredded, ContentVault
from controlplane.tenancy import store
from tests.controlplane.console.client import ConsoleClient
from tests.controlplane.console.server import ConsoleServer

KEY_FIELD = re.compile(r'id="new-key-value" readonly value="([^"]+)"')


def create_tenant(admin: ConsoleClient, server: ConsoleServer, **limits: str) -> str:
    name = server.unique("team-")
    response = admin.post("/tenants", {"name": name, "max_concurrency": "3", **limits})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"/console/tenants/{name}?notice=tenant_created"
    return name


def create_key(admin: ConsoleClient, tenant: str) -> str:
    response = admin.post(f"/tenants/{tenant}/keys", {"key_name": "app"}, page=f"/tenants/{tenant}")
    assert response.status_code == 200, response.text
    match = KEY_FIELD.search(response.text)
    assert match, "the new key is shown on the page"
    return match.group(1)


def test_create_edit_disable_tenant(admin: ConsoleClient, server: ConsoleServer) -> None:
    name = create_tenant(admin, server, rpm="60", allowed_models="sim-model, other")
    listing = admin.get("/tenants")
    assert name in listing.text
    detail = admin.get(f"/tenants/{name}")
    assert detail.status_code == 200 and "sim-model, other" in detail.text
    edited = admin.post(f"/tenants/{name}/edit", {
        "max_concurrency": "5", "weight": "2", "rpm": "", "queue_size": "10",
        "queue_timeout": "5", "retention_days": "800", "capture_content": "on",
        "max_n": "4"})  # fmt: skip
    assert edited.status_code == 303
    page = admin.get(f"/tenants/{name}").text
    assert "0 / 5" in page and "800 days" in page and "content capture on" in page
    update = server.audit_entries("admin.tenant_update")[-1]
    assert update[1] == name
    assert update[2]["actor"] == admin.username
    assert update[2]["before"]["rpm"] == 60 and update[2]["after"]["rpm"] is None
    assert (
        update[2]["before"]["max_concurrency"] == 3 and update[2]["after"]["max_concurrency"] == 5
    )
    assert admin.post(f"/tenants/{name}/disable").status_code == 303
    assert 'badge bad">disabled' in admin.get(f"/tenants/{name}").text


def test_bad_form_input_is_named(admin: ConsoleClient, server: ConsoleServer) -> None:
    response = admin.post("/tenants", {"name": "Bad Name", "max_concurrency": "0"})
    assert response.status_code == 400
    assert "Max concurrency: Input should be greater than or equal to 1" in response.text
    assert "name: String should match pattern" in response.text
    name = create_tenant(admin, server)
    duplicate = admin.post("/tenants", {"name": name})
    assert duplicate.status_code == 409 and "already exists" in duplicate.text


def test_key_shown_once_works_with_openai_sdk_and_revocation_is_immediate(
    admin: ConsoleClient, server: ConsoleServer
) -> None:
    tenant = create_tenant(admin, server)
    secret = create_key(admin, tenant)
    assert secret.startswith("sk-sp-")
    detail = admin.get(f"/tenants/{tenant}").text
    assert secret not in detail and secret[:12] in detail  # later only the prefix
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=secret, max_retries=0)
    reply = client.chat.completions.create(
        model="sim-model", messages=[{"role": "user", "content": "hello"}], max_tokens=5
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    key_id = re.search(rf"/tenants/{tenant}/keys/(\d+)/revoke", detail)
    assert key_id
    revoked = admin.post(f"/tenants/{tenant}/keys/{key_id.group(1)}/revoke")
    assert revoked.status_code == 303
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(
            model="sim-model", messages=[{"role": "user", "content": "again"}], max_tokens=5
        )
    kinds = [kind for kind, t, _ in server.audit_entries() if t == tenant]
    assert "admin.key_create" in kinds and "admin.key_revoke" in kinds
    assert all(secret not in str(fields) for _, _, fields in server.audit_entries())


def test_rotate_replaces_the_key(admin: ConsoleClient, server: ConsoleServer) -> None:
    tenant = create_tenant(admin, server)
    old = create_key(admin, tenant)
    detail = admin.get(f"/tenants/{tenant}").text
    key_id = re.search(rf"/tenants/{tenant}/keys/(\d+)/rotate", detail)
    assert key_id
    rotated = admin.post(f"/tenants/{tenant}/keys/{key_id.group(1)}/rotate",
                         page=f"/tenants/{tenant}")  # fmt: skip
    assert rotated.status_code == 200
    new = KEY_FIELD.search(rotated.text)
    assert new and new.group(1) != old
    models = openai.OpenAI(base_url=f"{server.url}/v1", api_key=new.group(1), max_retries=0)
    assert models.models.list().data
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key=old, max_retries=0).models.list()


def test_rotate_keeps_the_lifetime(admin: ConsoleClient, server: ConsoleServer) -> None:
    """Rotated again and again, a 30-day key stays a 30-day key (it lost a day each time)."""
    tenant = create_tenant(admin, server)
    made = admin.post(f"/tenants/{tenant}/keys", {"key_name": "app", "expires_days": "30"},
                      page=f"/tenants/{tenant}")  # fmt: skip
    assert made.status_code == 200, made.text
    for _ in range(3):
        with server.sessions() as db:
            [key] = [k for k in store.list_keys(db, tenant) if k.revoked_at is None]
        assert key.expires_at is not None
        assert key.expires_at - key.created_at == timedelta(days=30)
        rotated = admin.post(f"/tenants/{tenant}/keys/{key.id}/rotate", page=f"/tenants/{tenant}")
        assert rotated.status_code == 200, rotated.text


def test_auditor_sees_no_mutating_controls_and_gets_403(
    auditor: ConsoleClient, admin: ConsoleClient, server: ConsoleServer
) -> None:
    tenant = create_tenant(admin, server)
    create_key(admin, tenant)
    for path in ("/tenants", f"/tenants/{tenant}"):
        page = auditor.get(path).text
        forms = re.findall(r'<form[^>]*action="([^"]+)"', page)
        assert forms == ["/console/signout"], forms  # sign-out is the only form
        assert "New tenant" not in page and "Revoke" not in page
    assert auditor.get("/tenants/new").status_code == 403
    token = auditor.csrf()
    for path, data in [("/tenants", {"name": "forged"}), (f"/tenants/{tenant}/disable", {}),
                       (f"/tenants/{tenant}/keys", {})]:  # fmt: skip
        forged = auditor.post(path, data, csrf=token)
        assert forged.status_code == 403
        assert forged.json()["error"]["code"] == "role_forbidden"
    assert "forged" not in admin.get("/tenants").text


def test_post_without_csrf_token_is_refused(admin: ConsoleClient, server: ConsoleServer) -> None:
    name = server.unique("nocsrf-")
    for csrf in (None, "wrong-token"):
        response = admin.post("/tenants", {"name": name}, csrf=csrf)
        assert response.status_code == 403
        error = response.json()["error"]
        assert error["code"] == "csrf_failed" and error["type"] == "permission_error"
    assert name not in admin.get("/tenants").text


def test_erase_needs_the_typed_name_then_shreds(
    admin: ConsoleClient, server: ConsoleServer
) -> None:
    tenant = create_tenant(admin, server, capture_content="on")
    secret = create_key(admin, tenant)
    vault = ContentVault(server.sessions.kw["bind"], server.settings.data_dir / "audit-content.key")
    sealed = vault.seal(tenant, "a captured prompt")
    wrong = admin.post(f"/tenants/{tenant}/erase", {"confirm_name": tenant + "x"},
                       page=f"/tenants/{tenant}")  # fmt: skip
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "confirm_name"
    assert vault.open(tenant, sealed) == b"a captured prompt"
    erased = admin.post(f"/tenants/{tenant}/erase", {"confirm_name": tenant},
                        page=f"/tenants/{tenant}")  # fmt: skip
    assert erased.status_code == 303
    with pytest.raises(ContentShredded):
        vault.open(tenant, sealed)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key=secret, max_retries=0).models.list()
    page = admin.get(f"/tenants/{tenant}").text
    assert "disabled" in page and "revoked" in page
    kinds = [kind for kind, t, _ in server.audit_entries() if t == tenant]
    # The erased tenant's key was refused, and that attempt is on record too.
    assert kinds[-4:] == ["admin.tenant_disable", "admin.tenant_content_shredded",
                          "admin.tenant_erase", "api.auth_failed"]  # fmt: skip


def test_context_cap_through_the_form_and_the_tenant_page(
    admin: ConsoleClient, server: ConsoleServer
) -> None:
    name = create_tenant(admin, server, max_context_tokens="4096")
    page = admin.get(f"/tenants/{name}").text
    assert '<dd id="max-context-tokens">4,096 tokens (prompt + completion)</dd>' in page
    form = admin.get(f"/tenants/{name}/edit").text
    assert "Max context per request" in form and 'name="max_context_tokens" value="4096"' in form
    edited = admin.post(f"/tenants/{name}/edit", {
        "max_concurrency": "3", "weight": "1", "queue_size": "64", "queue_timeout": "30",
        "retention_days": "365", "max_context_tokens": "", "max_n": "4"})  # fmt: skip
    assert edited.status_code == 303, edited.text
    assert (
        '<dd id="max-context-tokens">the model&#39;s own</dd>' in admin.get(f"/tenants/{name}").text
    )
    update = server.audit_entries("admin.tenant_update")[-1][2]
    assert update["before"]["max_context_tokens"] == 4096
    assert update["after"]["max_context_tokens"] is None
    refused = admin.post("/tenants", {"name": server.unique("team-"), "max_context_tokens": "0"})
    assert refused.status_code == 400
    assert "Max context per request: Input should be greater than or equal to 1" in refused.text
