"""Issue 15 section 5, the gateway's half: media stays inside. A content part that points at a
remote URL (image, audio, video) is refused unless the tenant is allowed remote media: with a
`type` or without one (vLLM then reads the part by its keys), and in an embeddings request's
chat messages as in a chat request's. Failed before the fix for every part without a media
`type` (the engine got them) and for embeddings."""

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


# The shapes vLLM 0.32 reads by key (`_parse_chat_message_content_mm_part`): no `type` (or a
# null one), or any `type` with a `uuid`; an `input_image` part's URL is its `image_url`.
KEYED_PARTS = [
    ({"image_url": "http://10.0.0.5/x.png"}, "image_url"),
    ({"image_url": {"url": "https://example.com/cat.png"}}, "image_url"),
    ({"audio_url": "http://example.com/a.wav"}, "audio_url"),
    ({"audio_url": {"url": "https://example.com/a.wav"}}, "audio_url"),
    ({"video_url": "https://example.com/v.mp4"}, "video_url"),
    ({"video_url": {"url": "file:///etc/passwd"}}, "video_url"),
    ({"input_audio": {"data": "https://example.com/a.wav", "format": "wav"}}, "input_audio"),
    ({"type": None, "image_url": "https://example.com/cat.png"}, "image_url"),
    (
        {"type": "text", "text": "hi", "uuid": "u1", "image_url": "http://example.com/x"},
        "image_url",
    ),
    ({"type": "image_embeds", "uuid": "u2", "video_url": "http://example.com/v"}, "video_url"),
    ({"type": "input_image", "image_url": "https://example.com/cat.png"}, "image_url"),
]


@pytest.fixture(scope="module")
def no_remote_media(gateway: ThreadGateway) -> str:
    """The key of a tenant that is not allowed remote media (the default)."""
    with gateway.admin() as admin:
        return new_tenant(admin, "media-keyed")


def engine_calls(sim: SimHandle) -> tuple[int, int]:
    """Requests the engine served and refused: unchanged by a request refused before it."""
    stats = sim.stats()
    return stats["requests"], stats["rejected"]


def assert_refused(response: httpx.Response, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("remote_media_not_allowed", param), error


@pytest.mark.parametrize(("part", "kind"), KEYED_PARTS, ids=repr)
def test_a_remote_media_part_read_by_its_keys_is_refused(
    gateway: ThreadGateway, sim: SimHandle, no_remote_media: str, part: dict[str, Any], kind: str
) -> None:
    before = engine_calls(sim)
    response = post(gateway, no_remote_media, [{"type": "text", "text": "look"}, part])
    assert_refused(response, f"messages[1].content[1].{kind}")
    assert engine_calls(sim) == before


def user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "embed"}, *parts]}]


REMOTE = {"image_url": "http://10.0.0.5/x.png"}
INLINE = {"image_url": {"url": DATA_PNG}}
EMBEDDINGS = [  # (the request's conversations, the part refused)
    ({"messages": user(REMOTE)}, "messages[0].content[1].image_url"),
    ({"input": user(REMOTE)}, "input[0].content[1].image_url"),
    ({"messages": [user(INLINE), user(REMOTE)]}, "messages[1][0].content[1].image_url"),
    ({"input": [user(INLINE), user(INLINE, REMOTE)]}, "input[1][0].content[2].image_url"),
]


@pytest.mark.parametrize(("conversations", "param"), EMBEDDINGS, ids=lambda v: str(v)[:40])
def test_remote_media_in_an_embeddings_conversation_is_refused(
    gateway: ThreadGateway,
    sim: SimHandle,
    no_remote_media: str,
    conversations: dict[str, Any],
    param: str,
) -> None:
    before = engine_calls(sim)
    body = {"model": "sim-model", **conversations}
    headers = {"Authorization": f"Bearer {no_remote_media}"}
    response = httpx.post(gateway.url + "/v1/embeddings", json=body, headers=headers)
    assert_refused(response, param)
    assert engine_calls(sim) == before


def test_embeddings_of_text_and_token_ids_pass(
    gateway: ThreadGateway, no_remote_media: str
) -> None:
    headers = {"Authorization": f"Bearer {no_remote_media}"}
    for given in ("some text", ["two", "texts"], [1, 2, 3], [[1, 2], [3]]):
        body = {"model": "sim-model", "input": given}
        response = httpx.post(gateway.url + "/v1/embeddings", json=body, headers=headers)
        assert response.status_code == 200, (given, response.text)
