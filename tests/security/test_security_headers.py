"""Issue 17, finding 7: the console's security headers (CSP, X-Frame-Options, nosniff,
Referrer-Policy) on every response of the application: /docs, /redoc, /static, the API, the
relayed /v1 routes, and errors. This test failed on the code before the fix."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.routing import Mount

from tests.controlplane.console.browser import chromium
from tests.controlplane.console.server import ConsoleServer
from tests.controlplane.harness import ADMIN_TOKEN

REQUIRED = ("content-security-policy", "x-frame-options", "x-content-type-options",
            "referrer-policy")  # fmt: skip


def _check(response: httpx.Response, what: str) -> None:
    missing = [name for name in REQUIRED if name not in response.headers]
    assert not missing, f"{what} ({response.status_code}) lacks {missing}"
    assert response.headers["x-frame-options"] == "DENY", what
    assert response.headers["x-content-type-options"] == "nosniff", what
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"], what


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def _routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's included router
        if included is not None:
            yield from _routes(included.routes, prefix + route.include_context.prefix)
        elif isinstance(route, Mount):
            yield "GET", prefix + route.path + "/no-such-file.js"
        elif getattr(route, "path", None) is not None:
            methods = getattr(route, "methods", None) or {"GET"}
            yield from ((method, _concrete(prefix + route.path)) for method in sorted(methods))
        else:
            yield from _routes(getattr(route, "routes", []), prefix)


def _every_route(server: ConsoleServer) -> list[tuple[str, str]]:
    """(method, path) of every route and mount of the app, path parameters filled in."""
    found = sorted(set(_routes(server.app.routes)))
    assert len(found) > 40, found
    return found


def test_every_route_and_error_has_the_headers(server: ConsoleServer) -> None:
    static = {"/static/console.css", "/docs-assets/swagger-ui/swagger-ui.css",
              "/docs-assets/redoc/redoc.standalone.js"}  # fmt: skip
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for method, path in _every_route(server):
            for headers in ({}, {"Authorization": f"Bearer {ADMIN_TOKEN}"}):
                response = client.request(method, path, headers=headers)
                _check(response, f"{method} {path}")
        for path in sorted(static):
            response = client.get(path)
            assert response.status_code == 200, path
            _check(response, path)
        # Errors: unknown path, wrong method, a refused /v1 call, a browser's console error.
        _check(client.get("/no/such/page"), "404")
        _check(client.delete("/healthz"), "405")
        _check(client.post("/v1/chat/completions", json={}), "refused /v1 call")
        html = client.get("/console/tenants/x", headers={"Accept": "text/html"})
        _check(html, "console page for a signed-out browser")


@pytest.mark.parametrize(("path", "ready"), [
    ("/docs", ".swagger-ui .info .title"), ("/redoc", "h1"),
])  # fmt: skip
def test_docs_pages_still_render_under_their_policy(
    server: ConsoleServer, path: str, ready: str
) -> None:
    with chromium() as browser:
        page = browser.new_page()
        violations: list[str] = []
        page.on("console", lambda message: violations.append(message.text)
                if "Content Security Policy" in message.text else None)  # fmt: skip
        response = page.goto(server.url + path)
        assert response is not None
        _check_headers = response.all_headers()
        assert "content-security-policy" in _check_headers
        page.wait_for_selector(ready, timeout=20_000)
        assert "Sparkplane" in page.inner_text(ready)
        # The policy may only block what an air-gapped page must not load anyway (ReDoc's logo
        # from its CDN): nothing of the page's own origin, no inline script or style it needs.
        own = [text for text in violations if not re.search(r"'https?://(?!127\.0\.0\.1)", text)]
        assert own == []
