"""A small form-posting HTTP client that behaves like a browser without JavaScript."""

from __future__ import annotations

import re
from typing import Any

import httpx

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF_INPUT.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


class ConsoleClient:
    def __init__(self, base_url: str, local_address: str | None = None) -> None:
        """`local_address`: connect from another loopback address (127.0.0.2, ...), as a
        second machine would."""
        self.username = ""
        transport = httpx.HTTPTransport(local_address=local_address) if local_address else None
        self.http = httpx.Client(
            base_url=base_url, follow_redirects=False, timeout=30, transport=transport
        )

    def close(self) -> None:
        self.http.close()

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(f"/console{path}", **kwargs)

    def signin(self, username: str, password: str, **fields: str) -> httpx.Response:
        self.username = username
        form = self.get("/signin")
        data = {"username": username, "password": password, "csrf_token": csrf_of(form.text)}
        return self.http.post("/console/signin", data=data | fields)

    def csrf(self, page: str = "/tenants") -> str:
        response = self.get(page)
        assert response.status_code == 200, response.text
        return csrf_of(response.text)

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: str | None = "auto",
             page: str = "/tenants") -> httpx.Response:  # fmt: skip
        fields = dict(data or {})
        if csrf == "auto":
            fields["csrf_token"] = self.csrf(page)
        elif csrf is not None:
            fields["csrf_token"] = csrf
        return self.http.post(f"/console{path}", data=fields)
