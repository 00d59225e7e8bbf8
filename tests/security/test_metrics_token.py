"""Issue 17, finding 6: /metrics lists tenant names, token counts and authentication failures,
so it needs the scrape token from SPARKPLANE_METRICS_TOKEN_FILE. Failed before the fix (an
anonymous scrape got 200)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.controlplane.console.server import ConsoleServer, running_console

TOKEN = secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    token_file = tmp_path_factory.mktemp("secrets") / "metrics-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    with running_console(tmp_path_factory, metrics_token_file=token_file) as running:
        yield running


def _error(response: httpx.Response) -> dict[str, str]:
    body: dict[str, dict[str, str]] = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer"],
    ids=["none", "wrong", "basic-scheme", "empty"],  # stable ids: the token is random
)
def test_a_scrape_without_the_token_is_refused(scraped: ConsoleServer, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = httpx.get(scraped.url + "/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert _error(response)["code"] == "invalid_metrics_token"
    assert "sparkplane_" not in response.text


def test_the_scrape_token_reads_the_metrics(scraped: ConsoleServer) -> None:
    response = httpx.get(scraped.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert "sparkplane_" in response.text


def test_without_a_token_file_metrics_are_off(server: ConsoleServer) -> None:
    response = httpx.get(server.url + "/metrics", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 401
    assert _error(response)["code"] == "metrics_token_not_set"


def test_production_refuses_a_token_file_others_can_read(tmp_path: Path) -> None:
    from controlplane.core.config import Settings

    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    with pytest.raises(ValueError, match="METRICS_TOKEN_FILE"):
        Settings(environment="production", data_dir=tmp_path, engine_urls=["http://e:1"],
                 metrics_token_file=token_file)  # fmt: skip
