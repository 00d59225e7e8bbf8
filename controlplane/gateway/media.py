"""Media stays inside: a chat request may carry images, audio and video only as inline data.

vLLM fetches a media part given by URL itself (http, https, and file paths it is allowed), so a
URL in a request would make the appliance reach out of the site or read its own disk on a
client's behalf. Unless the tenant is allowed remote media (`allow_remote_media`), every media
part must be a `data:` URL or inline base64; anything else is refused with 400 naming the part.

vLLM 0.32 reads chat messages in a chat request's `messages` and in an embeddings request's
`messages` or `input` (one conversation, or a batch of them), with one parser
(`_parse_chat_message_content_mm_part` in vllm/renderers/chat_utils.py). That parser finds a
part's media by its `type`, but by its keys when the part has no `type` or has a `uuid`
(`{"image_url": "http://..."}`, `{"audio_url": {"url": ...}}`, ...), and an `input_image`
part's URL is its `image_url`: so every media key of every part is looked at, whatever its type.

Cheap on the hot path: only a message whose content is a list of parts is looked at.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeGuard

from controlplane.gateway.errors import InvalidRequest

# Media key of a part -> where its URL is (OpenAI's `image_url`, vLLM's `audio_url`/`video_url`)
# or its inline data (`input_audio`, base64 only: a URL there is refused as well).
_MEDIA_FIELDS = {
    "image_url": "url",
    "audio_url": "url",
    "video_url": "url",
    "input_audio": "data",
}
# The relayed endpoints whose requests the engine may read chat messages from, and where:
# chat's `messages`, embeddings' `messages` or `input` (completions take only a prompt).
MEDIA_ENDPOINTS = frozenset({"chat/completions", "embeddings"})
_CONVERSATION_FIELDS = ("messages", "input")


def refuse_remote_media(body: dict[str, Any]) -> None:
    """Raise InvalidRequest for the first media part that is not inline data."""
    for where, messages in _conversations(body):
        for m, message in enumerate(messages):
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, list):
                continue  # a plain string: no media
            for p, part in enumerate(content):
                if isinstance(part, dict):
                    _refuse_remote_part(part, f"{where}[{m}].content[{p}]")


def _conversations(body: dict[str, Any]) -> Iterator[tuple[str, list[Any]]]:
    """Every list of chat messages in the body, with its place: a conversation is a list of
    message objects, a batch a list of conversations (vLLM refuses any other mix). Prompts and
    token ids are lists of strings and numbers: passed over at their first item."""
    for field in _CONVERSATION_FIELDS:
        value = body.get(field)
        if _is_conversation(value):
            yield field, value
        elif isinstance(value, list) and value and _is_conversation(value[0]):
            for b, item in enumerate(value):
                if _is_conversation(item):
                    yield f"{field}[{b}]", item


def _is_conversation(value: Any) -> TypeGuard[list[Any]]:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def _refuse_remote_part(part: dict[str, Any], where: str) -> None:
    for kind, field in _MEDIA_FIELDS.items():
        source = _source(part.get(kind), field)
        if source is not None and not _inline(source, field):
            raise _remote(f"{where}.{kind}", kind)


def _source(value: Any, field: str) -> str | None:
    """The part's URL or data: `{"url": ...}`, or a bare string as vLLM also accepts."""
    if isinstance(value, dict):
        value = value.get(field)
    return value if isinstance(value, str) else None


def _inline(source: str, field: str) -> bool:
    if field == "data":  # base64 has no ":", a URL's scheme (http:, file:) has
        return ":" not in source[:64]
    return source.lstrip()[:5].lower() == "data:"


def _remote(param: str, kind: str) -> InvalidRequest:
    inline = "base64 in its data field" if kind == "input_audio" else "a data: URL (base64)"
    message = (
        f"{param} names media by URL, and this appliance fetches no remote media for this "
        f"tenant: send it inline, as {inline}"
    )
    return InvalidRequest(message, code="remote_media_not_allowed", param=param)
