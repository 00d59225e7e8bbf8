"""Every console route has a guard: enumerated from the router, not listed by hand."""

from __future__ import annotations

import re

from fastapi.routing import APIRoute

from controlplane.console.routes import PAGES, PREFIX
from tests.controlplane.console.client import ConsoleClient
from tests.controlplane.console.server import ConsoleServer

# The only state-changing routes an auditor may use.
AUDITOR_POSTS = {"/console/signout", "/console/password", "/console/audit/verify",
                 "/console/audit/export"}  # fmt: skip
PUBLIC = {("GET", "/console/signin"), ("POST", "/console/signin"), ("GET", "/console"),
          ("GET", "/console/oidc/start"), ("GET", "/console/oidc/callback")}  # fmt: skip


def console_routes() -> list[tuple[str, str]]:
    routes = [("GET", PREFIX)]
    for page in PAGES:
        for route in page.router.routes:
            assert isinstance(route, APIRoute)
            routes.extend((method, PREFIX + route.path) for method in sorted(route.methods or ()))
    return routes


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: "1" if "id" in m.group(0) or "seq" in m.group(0)
                  else "acme", path)  # fmt: skip


def test_every_route_needs_a_session(anonymous: ConsoleClient) -> None:
    for method, path in console_routes():
        if (method, path) in PUBLIC:
            continue
        response = anonymous.http.request(method, concrete(path))
        assert response.status_code == 303, (method, path, response.status_code)
        assert response.headers["location"].startswith("/console/signin")


def test_auditor_is_refused_every_admin_post(auditor: ConsoleClient) -> None:
    token = auditor.csrf("/audit")
    checked = 0
    for method, path in console_routes():
        if method != "POST" or path in AUDITOR_POSTS or (method, path) in PUBLIC:
            continue
        response = auditor.http.post(concrete(path), data={"csrf_token": token})
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"]["code"] == "role_forbidden"
        checked += 1
    assert checked >= 12


def test_every_post_needs_the_csrf_token(admin: ConsoleClient, server: ConsoleServer) -> None:
    for method, path in console_routes():
        if method != "POST":
            continue
        response = admin.http.post(concrete(path), data={"name": "x"})
        assert response.status_code == 403, (path, response.status_code)
        assert response.json()["error"]["code"] == "csrf_failed"
    assert admin.get("/").status_code == 200  # still signed in: nothing above signed it out
