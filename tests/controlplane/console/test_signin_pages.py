"""Sign-in, sessions, CSRF and lockout against a real server."""

from __future__ import annotations

from controlplane.console.throttle import ACCOUNT_FREE_FAILURES, ADDRESS_FREE_FAILURES
from tests.controlplane.console.client import ConsoleClient, csrf_of
from tests.controlplane.console.server import PASSWORD, ConsoleServer

NEW_PASSWORD = "a-much-better-passphrase"


def test_pages_need_a_session(anonymous: ConsoleClient) -> None:
    for path in ("/", "/tenants", "/tenants/new"):
        response = anonymous.get(path)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/console/signin?next=%2Fconsole")


def test_signin_sets_a_strict_http_only_cookie(server: ConsoleServer) -> None:
    name, password = server.add_user("admin")
    client = ConsoleClient(server.url)
    response = client.signin(name, password)
    assert response.status_code == 303 and response.headers["location"] == "/console/"
    cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie"
                  and v.startswith("sparkplane_console="))  # fmt: skip
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain HTTP here; TLS adds Secure and the __Host- prefix
    kinds = [(kind, fields.get("actor")) for kind, _, fields in server.audit_entries()]
    assert ("console.signin", name) in kinds
    client.close()


def test_signin_without_csrf_token_is_refused(server: ConsoleServer) -> None:
    name, password = server.add_user("admin")
    client = ConsoleClient(server.url)
    client.get("/signin")
    response = client.http.post("/console/signin", data={"username": name, "password": password})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"
    client.close()


def test_wrong_passwords_make_the_address_wait(server: ConsoleServer) -> None:
    name, _ = server.add_user("admin")
    client = ConsoleClient(server.url, local_address="127.0.1.1")
    for _ in range(ACCOUNT_FREE_FAILURES):
        response = client.signin(name, "not-the-password")
        assert response.status_code == 401
        assert "Wrong username or password" in response.text
    waiting = client.signin(name, PASSWORD)
    # The right password does not help while the wait lasts, from this address.
    assert waiting.status_code == 429 and "try again in" in waiting.text
    assert 1 <= int(waiting.headers["retry-after"]) <= 5
    failures = [f for kind, _, f in server.audit_entries("console.signin_failed")
                if f.get("actor") == name]  # fmt: skip
    # Failures are audited; the refused attempts, which tried nothing, are not.
    assert len(failures) == ACCOUNT_FREE_FAILURES
    assert failures[-1]["reason"] == "bad_credentials" and failures[-1]["blocked_seconds"] == 5
    client.close()


def test_one_time_password_must_be_changed_first(server: ConsoleServer) -> None:
    name, one_time = server.add_user("admin", password=None)
    client = ConsoleClient(server.url)
    assert client.signin(name, one_time).status_code == 303
    response = client.get("/tenants")
    assert response.status_code == 303 and response.headers["location"] == "/console/password"
    page = client.get("/password")
    assert page.status_code == 200 and "one-time password" in page.text
    token = csrf_of(page.text)
    mismatch = client.http.post("/console/password", data={
        "csrf_token": token, "current_password": one_time, "new_password": NEW_PASSWORD,
        "repeat_password": NEW_PASSWORD + "x"})  # fmt: skip
    assert mismatch.status_code == 400 and "differ" in mismatch.text
    changed = client.http.post("/console/password", data={
        "csrf_token": token, "current_password": one_time, "new_password": NEW_PASSWORD,
        "repeat_password": NEW_PASSWORD})  # fmt: skip
    assert changed.status_code == 303
    assert client.get("/tenants").status_code == 200
    client.close()
    again = ConsoleClient(server.url)
    assert again.signin(name, one_time).status_code == 401
    assert again.signin(name, NEW_PASSWORD).status_code == 303
    again.close()
    entries = server.audit_entries()
    assert ("admin.password_change", name) in [(k, f.get("target")) for k, _, f in entries]
    # No password, old or new, ever enters an entry.
    assert not [f for _, _, f in entries if one_time in str(f) or NEW_PASSWORD in str(f)]


def test_signout_ends_the_session(admin: ConsoleClient) -> None:
    assert admin.post("/signout").status_code == 303
    assert admin.get("/tenants").status_code == 303


def test_open_redirect_is_not_followed(server: ConsoleServer) -> None:
    name, password = server.add_user("admin")
    client = ConsoleClient(server.url)
    form = client.get("/signin")
    response = client.http.post("/console/signin", data={
        "username": name, "password": password, "csrf_token": csrf_of(form.text),
        "next": "//evil.example/console/"})  # fmt: skip
    assert response.headers["location"] == "/console/"
    client.close()


def test_one_address_spraying_usernames_is_throttled(server: ConsoleServer) -> None:
    client = ConsoleClient(server.url, local_address="127.0.1.2")
    for number in range(ADDRESS_FREE_FAILURES):
        assert client.signin(f"sprayed{number}", "guess").status_code == 401
    throttled = client.signin("sprayed99", "guess")
    assert throttled.status_code == 429
    assert 0 < int(throttled.headers["retry-after"]) <= 5
    assert "Too many failed sign-ins from your address" in throttled.text
    client.close()
