"""`sparkplane tenants|keys` as an operator runs them, against the server's database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from controlplane.core.config import load_settings
from tests.controlplane.harness import REPO_ROOT, ThreadGateway, make_settings
from tests.enginesim import SimHandle


def sparkplane(
    data_dir: Path, *args: str, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SPARKPLANE_DATA_DIR": str(data_dir)}
    extra = ["--config", str(config)] if config else []
    command = [sys.executable, "-c", "from installer.cli.main import main; main()", *args, *extra]
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_tenant_and_key_lifecycle(tmp_path: Path) -> None:
    created = sparkplane(
        tmp_path,
        "tenants",
        "create",
        "acme",
        "--max-concurrency",
        "4",
        "--weight",
        "2",
        "--rpm",
        "60",
        "--models",
        "a,b",
    )
    assert created.returncode == 0, created.stderr
    assert "acme" in created.stdout and "concurrency=4" in created.stdout
    listed = sparkplane(tmp_path, "tenants", "list")
    assert "models=a,b" in listed.stdout and "weight=2" in listed.stdout

    key = sparkplane(tmp_path, "keys", "create", "--tenant", "acme", "--expires", "30")
    assert key.returncode == 0, key.stderr
    secret = key.stdout.strip().splitlines()[-1]
    assert secret.startswith("sk-sp-") and len(secret) > 40
    keys = sparkplane(tmp_path, "keys", "list", "--tenant", "acme")
    assert secret[:12] in keys.stdout and "active" in keys.stdout and secret not in keys.stdout

    updated = sparkplane(tmp_path, "tenants", "update", "acme", "--max-concurrency", "9")
    assert "concurrency=9" in updated.stdout and "rpm=60" in updated.stdout
    cleared = sparkplane(tmp_path, "tenants", "update", "acme", "--rpm", "0", "--tpm", "0")
    assert cleared.returncode == 0, cleared.stderr
    assert "rpm=-" in cleared.stdout and "tpm=-" in cleared.stdout
    disabled = sparkplane(tmp_path, "tenants", "disable", "acme")
    assert "disabled" in disabled.stdout
    revoked = sparkplane(tmp_path, "keys", "revoke", "1")
    assert revoked.returncode == 0 and "revoked key 1" in revoked.stdout
    assert "revoked" in sparkplane(tmp_path, "keys", "list").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tenants", "create", "Bad Name"], "name"),
        (["tenants", "create", "ok", "--weight", "-1"], "weight"),
        (["tenants", "update", "absent", "--rpm", "5"], "tenant 'absent' does not exist"),
        (["tenants", "update", "absent"], "nothing to change"),
        (["keys", "create", "--tenant", "absent"], "tenant 'absent' does not exist"),
        (["keys", "revoke", "42"], "key 42 does not exist"),
    ],
)
def test_bad_input_names_the_problem(tmp_path: Path, args: list[str], message: str) -> None:
    result = sparkplane(tmp_path, *args)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_duplicate_tenant(tmp_path: Path) -> None:
    assert sparkplane(tmp_path, "tenants", "create", "dup").returncode == 0
    again = sparkplane(tmp_path, "tenants", "create", "dup")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_config_file_points_the_cli_at_the_servers_database(tmp_path: Path) -> None:
    data = tmp_path / "elsewhere"
    config = tmp_path / "controlplane.env"
    config.write_text(f"# appliance config\nSPARKPLANE_DATA_DIR={data}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from installer.cli.main import main; main()",
            "tenants",
            "create",
            "viaconfig",
            "--config",
            str(config),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("SPARKPLANE_")},
    )
    assert result.returncode == 0, result.stderr
    assert (data / "sparkplane.db").exists()
    assert oct((data / "pepper").stat().st_mode & 0o777) == "0o600"


def test_cli_revocation_reaches_a_running_server(sim: SimHandle, tmp_path: Path) -> None:
    server = ThreadGateway(make_settings(tmp_path, [sim.url]))
    try:
        assert sparkplane(tmp_path, "tenants", "create", "live").returncode == 0
        secret = sparkplane(tmp_path, "keys", "create", "--tenant", "live").stdout.split()[-1]
        headers = {"Authorization": f"Bearer {secret}"}
        assert httpx.get(server.url + "/v1/models", headers=headers).status_code == 200
        assert sparkplane(tmp_path, "keys", "revoke", "1").returncode == 0
        response = httpx.get(server.url + "/v1/models", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "revoked_api_key"
    finally:
        server.stop()


def test_settings_loader_files_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    yaml_file = tmp_path / "cp.yaml"
    yaml_file.write_text(
        "engine_urls: http://127.0.0.1:1/v1, http://127.0.0.1:2/v1\nSPARKPLANE_ENGINE_CAPACITY: 7\n"
    )
    settings = load_settings(yaml_file, data_dir=tmp_path)
    assert settings.engine_urls == ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]
    assert settings.engine_capacity == 7
    assert settings.database_url == f"sqlite:///{tmp_path.resolve()}/sparkplane.db"
    monkeypatch.setenv("SPARKPLANE_ENGINE_CAPACITY", "9")
    assert load_settings(yaml_file, data_dir=tmp_path).engine_capacity == 9  # env wins

    from controlplane.core.config import ConfigError

    bad = tmp_path / "bad.env"
    bad.write_text("SPARKPLANE_NO_SUCH_THING=1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(bad)
    bad.write_text("just words\n")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="must start with http"):
        load_settings(None, engine_urls="ftp://x")


def test_production_refuses_development_defaults(tmp_path: Path) -> None:
    from controlplane.core.config import ConfigError

    with pytest.raises(ConfigError, match="SPARKPLANE_DATA_DIR"):
        load_settings(None, environment="production", engine_urls="http://127.0.0.1:8000/v1")
    with pytest.raises(ConfigError, match="SPARKPLANE_ENGINE_URLS"):
        load_settings(None, environment="production", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="SPARKPLANE_ADMIN_TOKEN"):
        load_settings(
            None,
            environment="production",
            data_dir=tmp_path,
            engine_urls="http://127.0.0.1:8000/v1",
            admin_token="changethis",
        )
    ok = load_settings(
        None, environment="production", data_dir=tmp_path, engine_urls="http://127.0.0.1:8000/v1"
    )
    assert ok.environment == "production"


def test_pepper_file_is_guarded(tmp_path: Path) -> None:
    from controlplane.core.security import PepperError, load_or_create_pepper

    first = load_or_create_pepper(tmp_path)
    assert load_or_create_pepper(tmp_path) == first
    (tmp_path / "pepper").chmod(0o644)
    with pytest.raises(PepperError, match="chmod 600"):
        load_or_create_pepper(tmp_path)
    (tmp_path / "pepper").chmod(0o600)
    (tmp_path / "pepper").write_bytes(b"short")
    with pytest.raises(PepperError, match="expected 32"):
        load_or_create_pepper(tmp_path)
