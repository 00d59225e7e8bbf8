"""The console in a real browser (Debian's chromium) against a real server and the simulator."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import openai
import pytest
from playwright.sync_api import Browser, Page, expect

from controlplane.console.throttle import ACCOUNT_FREE_FAILURES
from tests.controlplane.console.browser import (
    chromium,
    console_page,
    screenshot,
    sign_in,
)
from tests.controlplane.console.server import PASSWORD, ConsoleServer

pytestmark = pytest.mark.browser
NEW_PASSWORD = "first-admin-chose-this"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def _reload_until(
    page: Page, path: str, ready: Callable[[Page], bool], timeout: float = 10
) -> None:
    """Reload `path` until `ready(page)` (usage reaches the database in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        page.goto(path)
        if ready(page):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never became ready")
        time.sleep(0.3)


def _requests_cell(page: Page) -> str:
    cells = page.locator("table tbody tr").first.locator("td")
    return cells.nth(2).inner_text() if cells.count() > 2 else ""


def test_admin_flow_from_first_sign_in_to_revocation(
    browser: Browser, server: ConsoleServer
) -> None:
    admin, one_time = server.add_user("admin", password=None, stem="root")
    with console_page(browser, server.url) as (page, guard):
        page.goto("/console/")
        expect(page).to_have_url(re.compile(r"/console/signin\?next="))
        screenshot(page, "01-signin")
        sign_in(page, admin, one_time)
        expect(page).to_have_url(re.compile(r"/console/password$"))
        expect(page.locator(".notice.warn")).to_contain_text("one-time password")
        screenshot(page, "02-change-password")
        page.fill("input[name=current_password]", one_time)
        page.fill("input[name=new_password]", NEW_PASSWORD)
        page.fill("input[name=repeat_password]", NEW_PASSWORD)
        page.click("form.stack button[type=submit]")
        expect(page.locator("h1")).to_have_text("Dashboard")
        expect(page.locator(".notice.ok")).to_contain_text("Password changed")

        tenant = server.unique("acme-")
        page.click("nav >> text=Tenants")
        page.click("text=New tenant")
        page.fill("input[name=name]", tenant)
        page.fill("input[name=max_concurrency]", "4")
        page.fill("input[name=rpm]", "600")
        page.fill("input[name=allowed_models]", "sim-model")
        screenshot(page, "04-tenant-create")
        page.click("button:has-text('Create tenant')")
        expect(page.locator("h1")).to_contain_text(tenant)

        page.fill("input[name=key_name]", "billing-app")
        page.click("button:has-text('Create key')")
        key_field = page.locator("#new-key-value")
        secret = key_field.input_value()
        assert secret.startswith("sk-sp-")
        page.click("button[data-copy-target=new-key-value]")
        expect(page.locator("button[data-copy-target=new-key-value]")).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == secret
        screenshot(page, "06-key-created")

        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=secret, max_retries=0)
        reply = client.chat.completions.create(
            model="sim-model", messages=[{"role": "user", "content": "Hello"}], max_tokens=12
        )
        assert reply.choices[0].message.content
        stream = client.chat.completions.create(
            model="sim-model", messages=[{"role": "user", "content": "Stream"}], max_tokens=20,
            stream=True,
        )  # fmt: skip
        assert sum(1 for chunk in stream if chunk.choices and chunk.choices[0].delta.content) > 0

        _reload_until(page, f"/console/usage?tenant={tenant}", lambda p: _requests_cell(p) == "2")
        expect(page.locator("table tbody tr").first).to_contain_text(tenant)
        screenshot(page, "07-usage")
        page.goto(f"/console/tenants/{tenant}")
        assert page.locator("svg.chart rect.bar-completion").count() == 30
        expect(page.locator("text=sim-model").last).to_be_visible()
        screenshot(page, "05-tenant-detail")

        page.goto(f"/console/audit?tenant={tenant}")
        expect(page.locator("table")).to_contain_text("api.completion")
        expect(page.locator("table")).to_contain_text("admin.key_create")
        screenshot(page, "08-audit")
        page.click("button:has-text('Verify now')")
        expect(page.locator("#verify-result")).to_contain_text("Chain verified")
        page.locator("table tbody tr td a").first.click()
        expect(page.locator("h1")).to_contain_text("Audit entry")
        screenshot(page, "09-audit-entry")

        page.goto(f"/console/tenants/{tenant}")
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("button:has-text('Revoke')")
        expect(page.locator(".notice.ok")).to_contain_text("Key revoked")
        with pytest.raises(openai.AuthenticationError):
            client.models.list()

        page.goto("/console/")
        expect(page.locator("table").first).to_contain_text(tenant)
        screenshot(page, "03-dashboard")
        page.goto("/console/tenants")
        screenshot(page, "04-tenants")
        page.goto(f"/console/tenants/{tenant}/edit")
        expect(page.locator("input[name=rpm]")).to_have_value("600")
        screenshot(page, "04-tenant-edit")
        page.goto("/console/admins")
        screenshot(page, "10-admin-users")
        page.goto("/console/system")
        expect(page.locator("body")).to_contain_text("sparkplane-demo")
        screenshot(page, "11-system")
        page.click("button:has-text('Sign out')")
        expect(page).to_have_url(re.compile(r"/console/signin$"))
    assert any("/static/console.css" in url for url in guard.seen)


def test_auditor_has_no_mutating_controls_and_forged_posts_fail(
    browser: Browser, server: ConsoleServer
) -> None:
    tenant = server.unique("globex-")
    with server.sessions() as db:
        from controlplane.tenancy import store
        from controlplane.tenancy.models import TenantCreate

        store.create_tenant(db, TenantCreate.model_validate({"name": tenant}))
    auditor, _ = server.add_user("auditor")
    with console_page(browser, server.url) as (page, _guard):
        sign_in(page, auditor, PASSWORD)
        expect(page.locator("h1")).to_have_text("Dashboard")
        assert page.locator("nav >> text=Admin users").count() == 0
        for path in ("/console/usage", "/console/tenants", f"/console/tenants/{tenant}"):
            page.goto(path)
            actions = page.locator("form[method=post]").evaluate_all(
                "forms => forms.map(f => new URL(f.action).pathname)"
            )
            assert actions == ["/console/signout"], (path, actions)
        screenshot(page, "12-auditor-tenant")
        token = page.locator("input[name=csrf_token]").first.input_value()
        forged = page.request.post("/console/tenants", form={"name": "forged", "csrf_token": token})
        assert forged.status == 403 and forged.json()["error"]["code"] == "role_forbidden"
        disable = page.request.post(f"/console/tenants/{tenant}/disable",
                                    form={"csrf_token": token})  # fmt: skip
        assert disable.status == 403
        no_csrf = page.request.post("/console/audit/verify", form={})
        assert no_csrf.status == 403 and no_csrf.json()["error"]["code"] == "csrf_failed"
        page.goto("/console/tenants")
        expect(page.locator("table")).not_to_contain_text("forged")


def test_repeated_failures_make_the_address_wait(browser: Browser, server: ConsoleServer) -> None:
    user, _ = server.add_user("admin", stem="mallory-target")
    with console_page(browser, server.url) as (page, _guard):
        for _ in range(ACCOUNT_FREE_FAILURES):
            sign_in(page, user, "guessing-wrong")
            expect(page.locator(".notice.bad")).to_have_text("Wrong username or password.")
        sign_in(page, user, PASSWORD)
        expect(page.locator(".notice.bad")).to_contain_text("Too many failed sign-ins")
        screenshot(page, "13-signin-throttled")


def test_core_forms_work_without_javascript(browser: Browser, server: ConsoleServer) -> None:
    admin, _ = server.add_user("admin")
    with console_page(browser, server.url, javascript=False) as (page, _guard):
        sign_in(page, admin, PASSWORD)
        expect(page.locator("h1")).to_have_text("Dashboard")
        tenant = server.unique("nojs-")
        page.goto("/console/tenants/new")
        page.fill("input[name=name]", tenant)
        page.click("button:has-text('Create tenant')")
        expect(page.locator("h1")).to_contain_text(tenant)
        page.click("button:has-text('Create key')")
        assert page.locator("#new-key-value").input_value().startswith("sk-sp-")
        page.fill("input[name=confirm_name]", tenant)
        page.click("button:has-text('Erase')")
        expect(page.locator(".notice.ok")).to_contain_text("Tenant erased")


def test_erase_button_waits_for_the_typed_name(browser: Browser, server: ConsoleServer) -> None:
    admin, _ = server.add_user("admin")
    tenant = server.unique("typed-")
    with console_page(browser, server.url) as (page, _guard):
        sign_in(page, admin, PASSWORD)
        page.goto("/console/tenants/new")
        page.fill("input[name=name]", tenant)
        page.click("button:has-text('Create tenant')")
        erase = page.locator("button:has-text('Erase')")
        expect(erase).to_be_disabled()
        page.fill("input[name=confirm_name]", tenant[:-1])
        expect(erase).to_be_disabled()
        page.fill("input[name=confirm_name]", tenant)
        expect(erase).to_be_enabled()
