"""Media stays inside: a chat request may carry images, audio and video only as inline data.

vLLM fetches a media part given by URL itself (http, https, and file paths it is allowed), so a
URL in a request would make the appliance reach out of the site or read its own disk on a
client's behalf. Unless the tenant is allowed remote media (`allow_remote_media`), every media
part must be a `data:` URL or inline base64; anything else is refused with 400 naming the part.

Cheap on the hot path: only a message whose content is a list of parts is looked at.
"""

from __future__ import annotations

from typing import Any

from controlplane.gateway.errors import InvalidRequest

# Part type -> where its URL is (OpenAI's `image_url`, vLLM's `audio_url`/`video_url`) or its
# inline data (`input_audio`, base64 only: a URL there is refused as well).
_MEDIA_FIELDS = {
    "image_url": "url",
    "audio_url": "url",
    "video_url": "url",
    "input_audio": "data",
}


def refuse_remote_media(body: dict[str, Any]) -> None:
    """Raise InvalidRequest for the first media part that is not inline data."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    for m, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue  # a plain string: no media
        for p, part in enumerate(content):
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if not isinstance(kind, str) or kind not in _MEDIA_FIELDS:
                continue
            field = _MEDIA_FIELDS[kind]
            source = _source(part.get(kind), field)
            if source is not None and not _inline(source, field):
                raise _remote(f"messages[{m}].content[{p}].{kind}", kind)


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
