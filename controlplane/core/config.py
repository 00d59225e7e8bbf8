"""One `Settings` object: `SPARKPLANE_*` environment variables over an optional config file.

The config file is YAML (a mapping) or `KEY=VALUE` lines (the format of the appliance's
`/etc/sparkplane/controlplane.env`, read as systemd reads it: core/envfile.py); keys may carry
the `SPARKPLANE_` prefix or not. Environment
variables win over the file, so an operator can override one value for one run.
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from controlplane.core.envfile import parse_env

ENV_PREFIX = "SPARKPLANE_"
DEVELOPMENT_DATA_DIR = Path("sparkplane-data")
DEVELOPMENT_ENGINE_URLS = ["http://127.0.0.1:8000/v1"]
MIN_ADMIN_TOKEN_LENGTH = 24
WEAK_TOKENS = frozenset({"changethis", "changeme", "admin", "secret"})


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the setting."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    environment: Literal["development", "production"] = "development"
    data_dir: Path = DEVELOPMENT_DATA_DIR
    database_url: str = ""
    engine_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEVELOPMENT_ENGINE_URLS)
    )
    engine_capacity: int = Field(default=32, ge=1, le=4096)  # an engine's batch: --max-num-seqs
    # Requests an engine may hold waiting beyond its batch, so that a finished sequence is
    # replaced at the engine's next step. They carry their fair-queue tag as vLLM's `priority`,
    # so the engine must run `--scheduling-policy priority` (admission/engine_queue.py).
    engine_queue: int = Field(default=0, ge=0, le=4096)
    engine_health_interval: float = Field(default=2.0, gt=0)
    engine_connect_timeout: float = Field(default=5.0, gt=0)
    # Below the engine's own idle keep-alive (vLLM: 5 s), so we drop idle connections first.
    engine_keepalive: float = Field(default=4.0, gt=0)
    request_timeout: float = Field(
        default=600.0, gt=0, description="whole-request time limit, seconds"
    )
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    body_timeout: float = Field(default=30.0, gt=0, description="seconds to receive a body")
    # Slow clients (controlplane/api/http_server.py): every route, console included.
    header_timeout: float = Field(default=10.0, gt=0, description="seconds to receive headers")
    max_connections_per_address: int = Field(default=256, ge=1, le=100_000)
    # Refused credentials per address (controlplane/api/auth_limit.py): past the allowance in a
    # window the address gets 429 until the window ends; repeats are audited as one entry per
    # window (controlplane/api/refusals.py).
    auth_failure_window: float = Field(default=60.0, ge=1, le=3600)
    auth_failures_per_address: int = Field(default=20, ge=1, le=100_000)
    admin_token: SecretStr | None = None
    # /metrics answers only 'Authorization: Bearer <the first line of this file>' (unset: off).
    metrics_token_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # Multi-replica coordination: "auto" uses the database when it is PostgreSQL.
    coordination: Literal["auto", "local", "database"] = "auto"
    replica_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    lease_ttl: float = Field(
        default=15.0, gt=1, description="seconds before a dead replica's slots expire"
    )
    usage_flush_interval: float = Field(default=1.0, gt=0)
    # "durable": no response byte before the api.request audit event is committed (fsync), no
    # last byte before api.completion is; "queued": both only have to be accepted by the audit
    # writer, in the chain's order; they commit with the next group commit and are kept through
    # store failures, so no answer waits for a commit, but a crash of the process or the box
    # can lose its last milliseconds of events (docs/controlplane.md, "Audit").
    audit_wait: Literal["durable", "queued"] = "durable"
    # Audit retention (controlplane/audit/retention_job.py): each tenant's retention_days is
    # applied every AUDIT_RETENTION_INTERVAL_HOURS (0: only by `sparkplane audit prune`); entries
    # of no tenant (admin changes, installer events) are kept AUDIT_RETENTION_DAYS.
    audit_retention_days: int = Field(default=730, ge=1, le=36_500)
    audit_retention_interval_hours: float = Field(default=24.0, ge=0)
    # SIEM feed (controlplane/audit/feed/): tls://HOST[:PORT], tcp://, udp:// or file:///PATH
    # (empty: off); the CA that signed the receiver's certificate (unset: the system's CAs) and
    # an optional client certificate and key for receivers that ask for one.
    siem_target: str = ""
    siem_tls_ca: Path | None = None
    siem_tls_cert: Path | None = None
    siem_tls_key: Path | None = None
    # Console (controlplane/console): session lifetimes and the appliance root for its system page.
    console_idle_minutes: int = Field(default=30, ge=1, le=24 * 60)
    console_session_hours: int = Field(default=12, ge=1, le=24 * 30)
    appliance_root: Path | None = None
    # HTTPS: `serve` hands both to uvicorn; the installer's `tls init|import` writes them.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Console sign-in with the site's directory (docs/console.md, "Directory sign-in"). Group
    # lists are separated by ";" because LDAP DNs contain commas.
    ldap_url: str = Field(default="", description="ldaps://HOST[:PORT] or ldap:// (StartTLS)")
    ldap_plaintext: bool = False  # ldap:// without StartTLS: a lab's explicit opt-in
    ldap_ca_file: Path | None = None
    ldap_bind_dn: str = ""
    ldap_bind_password_file: Path | None = None
    ldap_user_base_dn: str = ""
    ldap_user_filter: str = "(&(objectClass=person)(uid={username}))"
    ldap_group_base_dn: str = ""
    ldap_group_filter: str = "(|(member={user_dn})(uniqueMember={user_dn}))"
    ldap_admin_groups: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ldap_auditor_groups: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ldap_timeout: int = Field(default=5, ge=1, le=60, description="seconds per LDAP call")
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret_file: Path | None = None
    oidc_ca_file: Path | None = None
    oidc_scopes: str = "openid profile email"
    oidc_username_claim: str = "preferred_username"
    oidc_groups_claim: str = "groups"
    oidc_admin_groups: Annotated[list[str], NoDecode] = Field(default_factory=list)
    oidc_auditor_groups: Annotated[list[str], NoDecode] = Field(default_factory=list)
    oidc_display_name: str = "Single sign-on"
    oidc_timeout: float = Field(default=5.0, gt=0, le=60)
    # The console's address as browsers reach it (https://sparkplane.example.org): the base of
    # the OIDC redirect URI, which the identity provider must have registered.
    console_public_url: str = ""

    @field_validator("engine_urls", mode="before")
    @classmethod
    def _split_engine_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("engine_urls")
    @classmethod
    def _check_engine_urls(cls, urls: list[str]) -> list[str]:
        if not urls:
            raise ValueError("at least one engine URL is needed")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"engine URL {url!r} must start with http:// or https://")
        return [url.rstrip("/") for url in urls]

    @field_validator(
        "ldap_admin_groups", "ldap_auditor_groups", "oidc_admin_groups", "oidc_auditor_groups",
        mode="before",
    )  # fmt: skip
    @classmethod
    def _split_groups(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(";") if part.strip()]
        return value

    @field_validator("siem_target")
    @classmethod
    def _check_siem_target(cls, value: str) -> str:
        if value and not value.startswith(("tls://", "tcp://", "udp://", "file:///")):
            raise ValueError(
                f"SPARKPLANE_SIEM_TARGET {value!r} must start with tls://, tcp://, udp:// "
                f"or file:/// (or be empty: no feed)"
            )
        return value

    @model_validator(mode="after")
    def _defaults_and_production_guard(self) -> Settings:
        if not self.database_url:
            path = (self.data_dir / "sparkplane.db").resolve()
            object.__setattr__(self, "database_url", f"sqlite:///{path}")
        self._check_tls_files()
        if self.metrics_token_file is not None and self.metrics_token_file.exists():
            # Read at each scrape, not here: a missing file only turns /metrics off.
            self._check_secret_file("METRICS_TOKEN_FILE", self.metrics_token_file)
        self._check_ldap()
        self._check_oidc()
        if (self.siem_tls_cert is None) != (self.siem_tls_key is None):
            raise ValueError("SPARKPLANE_SIEM_TLS_CERT and SPARKPLANE_SIEM_TLS_KEY go together")
        if self.environment == "production":
            self._refuse_development_defaults()
        return self

    def _check_tls_files(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError(
                "SPARKPLANE_TLS_CERT and SPARKPLANE_TLS_KEY go together: set both for HTTPS "
                "or neither for plain HTTP"
            )
        if self.tls_cert is None or self.tls_key is None:
            return
        for setting, path in (("TLS_CERT", self.tls_cert), ("TLS_KEY", self.tls_key)):
            if not path.is_file():
                raise ValueError(f"SPARKPLANE_{setting}: {path} is not a file")
        # A private key others can read is a leaked key; the installer writes it 0600.
        mode = self.tls_key.stat().st_mode
        if self.environment == "production" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ValueError(
                f"production refuses SPARKPLANE_TLS_KEY {self.tls_key} with mode "
                f"{stat.S_IMODE(mode):04o}: it must not be accessible to group or others "
                f"(chmod 600)"
            )

    def _check_secret_file(self, setting: str, path: Path | None) -> None:
        if path is None:
            return
        if not path.is_file():
            raise ValueError(f"SPARKPLANE_{setting}: {path} is not a file")
        mode = path.stat().st_mode
        if self.environment == "production" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ValueError(
                f"production refuses SPARKPLANE_{setting} {path} with mode "
                f"{stat.S_IMODE(mode):04o}: it must not be accessible to group or others "
                f"(chmod 600)"
            )

    def _check_ldap(self) -> None:
        if not self.ldap_url:
            return
        scheme = self.ldap_url.partition("://")[0].lower()
        if scheme not in ("ldaps", "ldap"):
            raise ValueError("SPARKPLANE_LDAP_URL must start with ldaps:// or ldap:// (StartTLS)")
        if self.ldap_plaintext and scheme == "ldaps":
            raise ValueError("SPARKPLANE_LDAP_PLAINTEXT contradicts an ldaps:// URL")
        needed = {
            "LDAP_USER_BASE_DN": self.ldap_user_base_dn,
            "LDAP_BIND_DN": self.ldap_bind_dn,
            "LDAP_BIND_PASSWORD_FILE": self.ldap_bind_password_file,
        }
        missing = [name for name, value in needed.items() if not value]
        if missing:
            raise ValueError(f"SPARKPLANE_LDAP_URL needs {', '.join(missing)} too")
        if not self.ldap_admin_groups and not self.ldap_auditor_groups:
            raise ValueError(
                "SPARKPLANE_LDAP_URL needs SPARKPLANE_LDAP_ADMIN_GROUPS or "
                "SPARKPLANE_LDAP_AUDITOR_GROUPS: without a mapped group nobody can sign in"
            )
        if "{username}" not in self.ldap_user_filter:
            raise ValueError("SPARKPLANE_LDAP_USER_FILTER must contain {username}")
        if "{user_dn}" not in self.ldap_group_filter:
            raise ValueError("SPARKPLANE_LDAP_GROUP_FILTER must contain {user_dn}")
        if self.ldap_ca_file is not None and not self.ldap_ca_file.is_file():
            raise ValueError(f"SPARKPLANE_LDAP_CA_FILE: {self.ldap_ca_file} is not a file")
        self._check_secret_file("LDAP_BIND_PASSWORD_FILE", self.ldap_bind_password_file)

    def _check_oidc(self) -> None:
        if not self.oidc_issuer:
            return
        if not self.oidc_issuer.startswith("https://"):
            raise ValueError("SPARKPLANE_OIDC_ISSUER must be an https:// URL")
        if not self.oidc_client_id:
            raise ValueError("SPARKPLANE_OIDC_ISSUER needs SPARKPLANE_OIDC_CLIENT_ID too")
        if not self.console_public_url.startswith(("https://", "http://")):
            raise ValueError(
                "SPARKPLANE_OIDC_ISSUER needs SPARKPLANE_CONSOLE_PUBLIC_URL, the console's "
                "address as browsers reach it (the redirect URI's base)"
            )
        if not self.oidc_admin_groups and not self.oidc_auditor_groups:
            raise ValueError(
                "SPARKPLANE_OIDC_ISSUER needs SPARKPLANE_OIDC_ADMIN_GROUPS or "
                "SPARKPLANE_OIDC_AUDITOR_GROUPS: without a mapped group nobody can sign in"
            )
        if self.oidc_ca_file is not None and not self.oidc_ca_file.is_file():
            raise ValueError(f"SPARKPLANE_OIDC_CA_FILE: {self.oidc_ca_file} is not a file")
        self._check_secret_file("OIDC_CLIENT_SECRET_FILE", self.oidc_client_secret_file)

    def _refuse_development_defaults(self) -> None:
        # Like full-stack-fastapi-template: defaults that are fine on a laptop are refused
        # on the appliance, where they would silently put state or secrets in the wrong place.
        if "data_dir" not in self.model_fields_set or not self.data_dir.is_absolute():
            raise ValueError("production needs SPARKPLANE_DATA_DIR set to an absolute path")
        if "engine_urls" not in self.model_fields_set:
            raise ValueError("production needs SPARKPLANE_ENGINE_URLS set explicitly")
        token = self.admin_token.get_secret_value() if self.admin_token else None
        if token is not None and (token in WEAK_TOKENS or len(token) < MIN_ADMIN_TOKEN_LENGTH):
            raise ValueError(
                f"production refuses SPARKPLANE_ADMIN_TOKEN shorter than "
                f"{MIN_ADMIN_TOKEN_LENGTH} characters or left at a default"
            )

    def checked_tls_files(self) -> tuple[str | None, str | None]:
        """uvicorn's ssl_certfile/ssl_keyfile (None: plain HTTP), once the pair loads together.

        Checked here rather than at validation: only `serve` needs to read the key, the admin
        CLI run by another user must still work with the same settings.
        """
        if self.tls_cert is None or self.tls_key is None:
            return None, None
        try:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot serve HTTPS with SPARKPLANE_TLS_CERT={self.tls_cert} and "
                f"SPARKPLANE_TLS_KEY={self.tls_key}: {exc}"
            ) from exc
        return str(self.tls_cert), str(self.tls_key)

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")

    @property
    def uses_database_coordination(self) -> bool:
        if self.coordination == "auto":
            return self.is_postgres
        return self.coordination == "database"


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping or KEY=VALUE file into lower-case setting names."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    if path.suffix in {".yaml", ".yml"}:
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of settings")
        raw = {str(key): value for key, value in loaded.items()}
    else:
        try:
            raw = dict(parse_env(text, path))  # what systemd reads from the same file
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.lower().removeprefix(ENV_PREFIX.lower())
        if name not in Settings.model_fields:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
        values[name] = value
    return values


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from (lowest first) the config file, the environment, then `overrides`."""
    values = read_config_file(config_file) if config_file is not None else {}
    for name in list(values):
        if f"{ENV_PREFIX}{name.upper()}" in os.environ:
            del values[name]
    values.update(overrides)
    try:
        return Settings(**values)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
