"""OpenID Connect in the real browser: from the sign-in page through the provider to the
dashboard, and signing out at both ends (Debian's chromium, oidc-provider on loopback)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Route, expect

from tests.controlplane.console.browser import chromium, screenshot
from tests.controlplane.console.oidc_server import ADMINS, OidcProvider
from tests.controlplane.console.server import ConsoleServer

pytestmark = pytest.mark.browser


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def test_sign_in_with_the_identity_provider_and_out_again(
    browser: Browser, oidc_console: ConsoleServer, oidc_provider: OidcProvider
) -> None:
    name = oidc_console.unique("sso-admin")
    oidc_provider.set_groups(name, [ADMINS])
    # The browser does not know the test CA; the control plane does (SPARKPLANE_OIDC_CA_FILE).
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 860})
    blocked: list[str] = []

    def stay_on_the_box(route: Route) -> None:
        url = route.request.url
        if url.startswith((oidc_console.url, oidc_provider.issuer, "data:")):
            route.continue_()
        else:  # the provider's stock pages ask for a web font; nothing leaves the machine
            blocked.append(url)
            route.abort()

    context.route("**/*", stay_on_the_box)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        page.goto(f"{oidc_console.url}/console/tenants")
        page.click("#signin-oidc")
        expect(page).to_have_url(re.compile(re.escape(oidc_provider.issuer)))
        page.fill("input[name=login]", name)
        page.fill("input[name=password]", "any-password")
        page.click("button[type=submit]")
        page.click("button[type=submit]")  # consent: "Continue"
        # Back at the console, on the page that was asked for first.
        expect(page).to_have_url(f"{oidc_console.url}/console/tenants")
        expect(page.locator("h1")).to_have_text("Tenants")
        page.goto(f"{oidc_console.url}/console/")
        expect(page.locator("h1")).to_have_text("Dashboard")
        page.goto(f"{oidc_console.url}/console/admins")
        row = page.locator("tr", has_text=f"oidc:{name}")
        expect(row).to_contain_text("oidc")
        expect(row).to_contain_text(f"{oidc_provider.issuer} {name}")
        expect(row).to_contain_text("127.0.0.1")
        screenshot(page, "20-admins-with-directory-users")
        page.click("form[action='/console/signout'] button")
        # RP-initiated logout: the provider asks, then sends the browser back to sign-in.
        page.click("button[name=logout]")
        expect(page).to_have_url(re.compile(r"/console/signin"))
        page.goto(f"{oidc_console.url}/console/")
        expect(page).to_have_url(re.compile(r"/console/signin\?next="))
        screenshot(page, "21-signin-with-directories")
    finally:
        context.close()
    assert all("fonts.googleapis.com" in url for url in blocked), blocked
