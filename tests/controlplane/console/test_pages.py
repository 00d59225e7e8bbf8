"""Every page renders for both roles, loads nothing from outside, and does what it says."""

from __future__ import annotations

import csv
import io
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai

from controlplane.audit.verify import verify_export
from tests.controlplane.console.client import ConsoleClient, csrf_of
from tests.controlplane.console.server import ConsoleServer
from tests.controlplane.console.test_tenant_pages import create_key, create_tenant

URL_ATTRIBUTES = {"src", "href", "action", "srcset", "poster", "data", "formaction", "xlink:href"}


class ReferenceCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.references: list[tuple[str, str, str]] = []
        self.inline_scripts = 0
        self.style_attributes = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in URL_ATTRIBUTES and value:
                self.references.extend((tag, name, v.strip().split(" ")[0])
                                       for v in value.split(","))  # fmt: skip
            if name == "style" or name.startswith("on"):
                self.style_attributes += 1
        self._in_script = tag == "script"
        if tag == "script" and not dict(attrs).get("src"):
            self.inline_scripts += 1


def assert_same_origin(html: str) -> list[str]:
    """Every reference is relative to this server; returns the static asset paths."""
    collector = ReferenceCollector()
    collector.feed(html)
    assert collector.inline_scripts == 0 and collector.style_attributes == 0
    assets = []
    for tag, attribute, value in collector.references:
        parts = urlsplit(value)
        if tag == "svg" or value.startswith("http://www.w3.org/"):
            continue  # the SVG namespace is an identifier, never fetched
        assert not parts.scheme and not parts.netloc, (
            f"<{tag} {attribute}={value!r}> leaves the box"
        )
        if tag in {"script", "link", "img"}:
            assets.append(value)
    return assets


def page_paths(tenant: str, seq: int) -> list[str]:
    return ["/", "/tenants", f"/tenants/{tenant}", f"/tenants/{tenant}/content", "/usage",
            "/audit", f"/audit/{seq}", "/system", "/password"]  # fmt: skip


def test_every_page_is_self_contained(
    admin: ConsoleClient, auditor: ConsoleClient, server: ConsoleServer
) -> None:
    tenant = create_tenant(admin, server)
    seq = len(server.audit_entries())
    assets: set[str] = set()
    for client, extra in ((admin, ["/tenants/new", f"/tenants/{tenant}/edit", "/admins"]),
                          (auditor, [])):  # fmt: skip
        for path in page_paths(tenant, seq) + extra:
            response = client.get(path)
            assert response.status_code == 200, (path, response.text[:300])
            csp = response.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp
            assert response.headers["x-frame-options"] == "DENY"
            assets.update(assert_same_origin(response.text))
    signin = httpx.get(f"{server.console}/signin")
    assets.update(assert_same_origin(signin.text))
    assert {a.split("?")[0] for a in assets} == {"/static/console.css", "/static/console.js",
                                                 "/static/favicon.svg"}  # fmt: skip
    for asset in assets:
        assert httpx.get(f"{server.url}{asset}").status_code == 200


def test_auditor_cannot_open_admin_users(auditor: ConsoleClient) -> None:
    assert auditor.get("/admins").status_code == 403
    assert "Admin users" not in auditor.get("/").text


def test_a_browser_gets_console_errors_as_pages_and_scripts_get_json(
    auditor: ConsoleClient,
) -> None:
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    page = auditor.get("/admins", headers=browser)
    assert page.status_code == 403 and page.headers["content-type"].startswith("text/html")
    assert "403 · Forbidden" in page.text and "role_forbidden" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    missing = auditor.get("/tenants/no-such-tenant", headers=browser)
    assert missing.status_code == 404 and "404 · Not Found" in missing.text
    assert 'href="/console/"' in missing.text
    as_json = auditor.get("/admins", headers={"Accept": "application/json"})
    assert as_json.status_code == 403 and as_json.json()["error"]["code"] == "role_forbidden"
    api = auditor.http.get("/api/tenants/x", headers=browser)  # the API answers JSON only
    assert api.headers["content-type"] == "application/json"


def _usage_csv(admin: ConsoleClient, tenant: str, requests: int) -> httpx.Response:
    """The CSV once `requests` requests are counted (usage reaches the database in batches)."""
    deadline = time.monotonic() + 10
    while True:
        response = admin.get("/usage.csv", params={"tenant": tenant})
        if f"{tenant},{requests}," in response.text or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_usage_table_and_csv(admin: ConsoleClient, server: ConsoleServer) -> None:
    tenant = create_tenant(admin, server)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=create_key(admin, tenant))
    for _ in range(2):
        client.chat.completions.create(
            model="sim-model", messages=[{"role": "user", "content": "hi"}], max_tokens=7
        )
    response = _usage_csv(admin, tenant, requests=2)
    assert tenant in admin.get("/usage", params={"tenant": tenant}).text
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 1 and rows[0]["tenant"] == tenant
    assert rows[0]["requests"] == "2" and rows[0]["completion_tokens"] == "14"
    assert admin.get("/usage", params={"start": "yesterday"}).status_code == 400
    detail = admin.get(f"/tenants/{tenant}").text
    assert "<svg" in detail and "2 requests" in detail


def test_audit_filters_detail_verify_and_export(
    admin: ConsoleClient, auditor: ConsoleClient, server: ConsoleServer, tmp_path: Path
) -> None:
    tenant = create_tenant(admin, server)
    listing = auditor.get("/audit", params={"tenant": tenant}).text
    assert "admin.tenant_create" in listing
    by_actor = auditor.get("/audit", params={"actor": admin.username, "action": "admin"}).text
    assert "admin.tenant_create" in by_actor and "console.signin" not in by_actor
    nobody = auditor.get("/audit", params={"actor": "nobody-at-all"}).text
    assert "No entries match." in nobody
    seq = re.search(r'href="/console/audit/(\d+)"', listing)
    assert seq
    entry = auditor.get(f"/audit/{seq.group(1)}").text
    assert "Entry hash" in entry and tenant in entry
    verified = auditor.post("/audit/verify", page="/audit")
    assert verified.status_code == 200 and "Chain verified" in verified.text
    page = auditor.get("/audit").text
    missing = auditor.http.post("/console/audit/export", data={"csrf_token": csrf_of(page)})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "reason"
    form = {"csrf_token": csrf_of(page), "reason": "case 2026-17 review", "tenant": tenant}
    export = auditor.http.post("/console/audit/export", data=form)
    assert export.status_code == 200 and "attachment" in export.headers["content-disposition"]
    path = tmp_path / "export.jsonl"
    path.write_bytes(export.content)
    keys = sorted(Path(server.settings.data_dir).glob("audit-signing*.pub"))
    report = verify_export(path, keys)
    assert report.valid, report.as_dict()
    exports = [f for _, _, f in server.audit_entries("audit.export")]
    assert exports[-1]["reason"] == "case 2026-17 review"
    assert exports[-1]["actor"] == auditor.username


def test_admin_users_page(admin: ConsoleClient, server: ConsoleServer) -> None:
    name = server.unique("operator")
    created = admin.post("/admins", {"username": name, "role": "auditor"}, page="/admins")
    assert created.status_code == 200
    secret = re.search(r'id="one-time-value" readonly value="([^"]+)"', created.text)
    assert secret
    newcomer = ConsoleClient(server.url)
    assert newcomer.signin(name, secret.group(1)).status_code == 303
    assert newcomer.get("/").headers["location"] == "/console/password"
    assert admin.post(f"/admins/{name}/role", {"role": "admin"}, page="/admins").status_code == 303
    assert newcomer.get("/password").status_code == 303  # a role change ends its sessions
    assert admin.post(f"/admins/{name}/disable", page="/admins").status_code == 303
    assert newcomer.signin(name, secret.group(1)).status_code == 401
    bad = admin.post("/admins", {"username": "x", "role": "admin"}, page="/admins")
    assert bad.status_code == 400 and "username must be" in bad.text
    assert admin.post(f"/admins/{name}/enable", page="/admins").status_code == 303
    assert admin.post(f"/admins/{name}/unlock", page="/admins").status_code == 303
    reset = admin.post(f"/admins/{name}/reset", page="/admins")
    assert reset.status_code == 200
    again = re.search(r'id="one-time-value" readonly value="([^"]+)"', reset.text)
    assert again and again.group(1) != secret.group(1)
    assert newcomer.signin(name, again.group(1)).status_code == 303
    entries = server.audit_entries()
    kinds = [(k, f.get("target")) for k, _, f in entries if k.startswith("admin.user")]
    for action in ("create", "role_change", "disable", "enable", "unlock", "password_reset"):
        assert (f"admin.user_{action}", f"user:{name}") in kinds, action
    # Neither one-time password ever enters an entry.
    assert not [f for _, _, f in entries if secret.group(1) in str(f) or again.group(1) in str(f)]
    newcomer.close()


def test_system_page_reads_the_installed_appliance(auditor: ConsoleClient) -> None:
    page = auditor.get("/system").text
    for fact in ("sparkplane-demo", "vllm-cpu", "active",
                 "--max-num-seqs", "demo-model", "installer.install", "spark.site.local",
                 "disk space", "262,144", "1.0 GiB",
                 "capacity 4 per engine, 2 more waiting in it"):  # fmt: skip
        assert fact in page, fact
    assert re.search(r"(89|90) days", page)


def test_the_csrf_header_works_and_pages_are_not_cached(
    admin: ConsoleClient, server: ConsoleServer
) -> None:
    """The other way to carry the token (`X-CSRF-Token`, for scripts), and the headers that
    keep a console page out of caches and its address out of Referer."""
    name = server.unique("header")
    token = admin.csrf()
    made = admin.http.post("/console/tenants", data={"name": name, "max_concurrency": "2"},
                           headers={"X-CSRF-Token": token})  # fmt: skip
    assert made.status_code == 303, made.text
    forged = admin.http.post("/console/tenants", data={"name": name + "-x"},
                             headers={"X-CSRF-Token": "forged"})  # fmt: skip
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf_failed"
    page = admin.get("/tenants")
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
