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
import time
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
    _log_start: int = 0

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

    @property
    def log_file(self) -> Path:
        """The provider's stdout and stderr: a file, so that a chatty provider never blocks on a
        full pipe nobody reads."""
        return self.directory / "provider.log"

    def start(self, timeout: float = 60) -> None:
        """Start Node and wait until it says it listens: at most `timeout` seconds per try, and a
        second try if the first neither listens nor exits (seen once in CI: a start that printed
        nothing for 15 minutes). The port stays: a restart keeps the issuer."""
        if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError(f"run `npm ci` in {PROVIDER_DIR} first (`make test` does)")
        failures = []
        for _ in range(2):
            if self._start_once(timeout):
                return
            failures.append(self._stop_and_describe())
        raise RuntimeError("oidc-provider did not start:\n" + "\n".join(failures))

    def _start_once(self, timeout: float) -> bool:
        tls = self.directory / "tls"
        env = {"PATH": "/usr/bin:/bin", "OIDC_PORT": str(self.port),
               "OIDC_CERT": str(tls / "server.crt"), "OIDC_KEY": str(tls / "server.key"),
               "OIDC_ACCOUNTS_FILE": str(self.accounts_file),
               "OIDC_CLIENTS_FILE": str(self.clients_file)}  # fmt: skip
        node = shutil.which("node") or "node"
        with self.log_file.open("ab") as log:
            self._log_start = log.tell()
            command = [node, str(PROVIDER_DIR / "provider.mjs")]
            self.process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if f"listening {self.issuer}" in self._output():
                return True
            time.sleep(0.05)
        return False

    def _output(self) -> str:
        """What the provider printed since its latest start."""
        with self.log_file.open("rb") as log:
            log.seek(self._log_start)
            return log.read().decode(errors="replace")

    def _stop_and_describe(self) -> str:
        """Stop a provider that did not start; what it printed and, if it hung, where."""
        assert self.process is not None
        state = f"exit code {self.process.poll()}"
        if self.process.poll() is None:
            proc = Path(f"/proc/{self.process.pid}")
            wchan = (proc / "wchan").read_text() if (proc / "wchan").exists() else "?"
            state = f"still running after the timeout, waiting in {wchan!r}"
            self.process.kill()
            self.process.wait(timeout=20)
        self.process = None
        return f"port {self.port}: {state}; its output:\n{self._output()}"

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
