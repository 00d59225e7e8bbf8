"""A real OpenID Connect provider on loopback: the npm package `oidc-provider` under Node.

`tests/oidc/` pins it (package.json + package-lock.json); `make test` runs `npm ci` there.
Started once per session over HTTPS with a certificate from a test CA. People are listed in a
JSON file the provider reads at every sign-in (`set_groups`); clients register themselves
(dynamic registration), so each test module can name its console's redirect URI.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

from controlplane.core.security import write_private_file
from installer.ops.tls import create_local_ca, issue_server_certificate
from tests.controlplane.console.server import free_port, wait_for_port

ADMINS, AUDITORS = "sparkplane-admins", "sparkplane-auditors"
PROVIDER_DIR = Path(__file__).resolve().parents[2] / "oidc"
FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', re.S)
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


@dataclass
class OidcProvider:
    directory: Path
    port: int
    accounts: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.directory / "tls" / "ca.crt"

    @property
    def accounts_file(self) -> Path:
        return self.directory / "accounts.json"

    @property
    def clients_file(self) -> Path:
        """Registered clients, so that a restarted provider still knows them."""
        return self.directory / "clients.json"

    def set_groups(self, login: str, groups: list[str]) -> None:
        self.accounts[login] = {"groups": groups}
        self.accounts_file.write_text(json.dumps(self.accounts))

    def start(self) -> None:
        if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError(f"run `npm ci` in {PROVIDER_DIR} first (`make test` does)")
        tls = self.directory / "tls"
        env = {"PATH": "/usr/bin:/bin", "OIDC_PORT": str(self.port),
               "OIDC_CERT": str(tls / "server.crt"), "OIDC_KEY": str(tls / "server.key"),
               "OIDC_ACCOUNTS_FILE": str(self.accounts_file),
               "OIDC_CLIENTS_FILE": str(self.clients_file)}  # fmt: skip
        node = shutil.which("node") or "node"
        self.process = subprocess.Popen([node, str(PROVIDER_DIR / "provider.mjs")], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if not line.startswith("listening"):
            stderr = self.process.stderr.read().decode() if self.process.stderr else ""
            raise RuntimeError(f"oidc-provider did not start: {line}{stderr}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None

    def http(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(verify=str(self.ca_file), timeout=30, **kwargs)  # type: ignore[arg-type]

    def register(self, redirect_uri: str, signed_out_uri: str) -> tuple[str, str]:
        """A new confidential client; returns (client_id, client_secret)."""
        body = {"redirect_uris": [redirect_uri], "post_logout_redirect_uris": [signed_out_uri],
                "grant_types": ["authorization_code"], "response_types": ["code"]}  # fmt: skip
        with self.http() as http:
            response = http.post(f"{self.issuer}/reg", json=body)
        assert response.status_code == 201, response.text
        client = response.json()
        known = json.loads(self.clients_file.read_text())
        keep = ("client_id", "client_secret", "redirect_uris", "post_logout_redirect_uris",
                "grant_types", "response_types")  # fmt: skip
        known.append({key: client[key] for key in keep})
        self.clients_file.write_text(json.dumps(known))
        return client["client_id"], client["client_secret"]

    def sign_in(self, http: httpx.Client, url: str, login: str) -> str:
        """Follow `url` through the provider's login and consent forms as `login`; returns the
        first URL that leaves the provider (the client's redirect URI with code and state)."""
        response = http.get(url)
        for _ in range(12):
            if response.is_redirect:
                target = urljoin(str(response.url), response.headers["location"])
                if not target.startswith(self.issuer):
                    return target
                response = http.get(target)
                continue
            match = FORM.search(response.text)
            assert response.status_code == 200 and match, response.text[:500]
            fields = {name: unescape(value) for name, value in HIDDEN.findall(match.group(2))}
            if 'name="login"' in match.group(2):
                fields |= {"login": login, "password": "any-password"}
            response = http.post(urljoin(str(response.url), unescape(match.group(1))), data=fields)
        raise AssertionError("the provider's forms did not end in a redirect")


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def start_oidc_provider(directory: Path) -> OidcProvider:
    create_local_ca(directory / "tls")
    issue_server_certificate(directory / "tls", ["127.0.0.1", "localhost"])
    provider = OidcProvider(directory, free_port())
    provider.accounts_file.write_text("{}")
    provider.clients_file.write_text("[]")
    provider.start()
    wait_for_port(provider.port, "oidc-provider")
    return provider


def oidc_settings(provider: OidcProvider, public_url: str, secrets_dir: Path,
                  client: tuple[str, str], **overrides: object) -> dict[str, object]:  # fmt: skip
    secret_file = secrets_dir / "oidc-client-secret"
    write_private_file(secret_file, client[1].encode())
    settings: dict[str, object] = {
        "oidc_issuer": provider.issuer, "oidc_client_id": client[0],
        "oidc_client_secret_file": secret_file, "oidc_ca_file": provider.ca_file,
        "oidc_scopes": "openid profile groups", "oidc_admin_groups": [ADMINS],
        "oidc_auditor_groups": [AUDITORS], "oidc_display_name": "Test IdP",
        "console_public_url": public_url,
    }  # fmt: skip
    return settings | overrides
