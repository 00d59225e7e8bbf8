"""Issue 15 section 5, the gateway's half: media stays inside. A content part that points at a
remote URL (image, audio, video) is refused unless the tenant is allowed remote media."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.controlplane.conftest import new_tenant
from tests.controlplane.harness import ThreadGateway
from tests.enginesim import SimHandle

DATA_PNG = "data:image/png;base64,iVBORw0KGgo="


def post(gateway: ThreadGateway, key: str, content: list[dict[str, Any]]) -> httpx.Response:
    body = {"model": "sim-model", "max_tokens": 2, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": content},
    ]}  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers)


REMOTE_PARTS = [
    ({"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}, "image_url"),
    ({"type": "image_url", "image_url": "http://10.0.0.5/x.png"}, "image_url"),
    ({"type": "video_url", "video_url": {"url": "HTTPS://example.com/v.mp4"}}, "video_url"),
    ({"type": "audio_url", "audio_url": {"url": "http://example.com/a.wav"}}, "audio_url"),
    ({"type": "input_audio", "input_audio": {"data": "https://example.com/a.wav"}}, "input_audio"),
    ({"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}, "image_url"),
]


@pytest.mark.parametrize(("part", "kind"), REMOTE_PARTS)
def test_a_remote_media_part_is_refused_by_default(
    gateway: ThreadGateway, sim: SimHandle, part: dict[str, Any], kind: str
) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, f"media-{kind}-{len(str(part))}")
    before = sim.stats()["requests"]
    response = post(gateway, key, [{"type": "text", "text": "look"}, part])
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "remote_media_not_allowed"
    assert error["param"] == f"messages[1].content[1].{kind}"
    assert "inline" in error["message"]
    assert "data: URL" in error["message"] or kind == "input_audio"
    assert sim.stats()["requests"] == before  # the engine never saw it


def test_inline_media_and_text_parts_pass(gateway: ThreadGateway) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "media-inline")
    parts = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": DATA_PNG}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]
    response = post(gateway, key, parts)
    assert response.status_code == 200, response.text


def test_a_tenant_allowed_remote_media_may_send_a_url(gateway: ThreadGateway) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "media-allowed", allow_remote_media=True)
        shown = admin.get("/api/tenants/media-allowed").json()
    assert shown["allow_remote_media"] is True
    part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    response = post(gateway, key, [part])
    assert response.status_code == 200, response.text
