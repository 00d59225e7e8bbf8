"""Server-sent events relay: pass events through whole, find the usage, strip it if unwanted.

Only events that may carry usage are parsed as JSON (a byte search finds them); every other
event is forwarded as the engine sent it.
"""

from __future__ import annotations

from typing import Any

import orjson

EVENT_END = b"\n\n"
# The stream's end marker is held back until `finish()`: the relay sends it after the call's
# audit entry is recorded, and a client that saw it may close at once (that is not a cancel).
DONE_EVENT = b"data: [DONE]\n\n"
MAX_PARTIAL_EVENT = 1024 * 1024  # an engine that never ends an event is relayed unframed


class StreamRelay:
    def __init__(self, strip_usage: bool) -> None:
        self.strip_usage = strip_usage
        self.usage: dict[str, Any] | None = None
        self.content_events = 0
        self._partial = b""
        self._done = False

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the engine; return the complete events to send on (maybe b"")."""
        buffer = self._partial + data if self._partial else data
        end = buffer.rfind(EVENT_END)
        if end < 0:
            if len(buffer) > MAX_PARTIAL_EVENT:
                self._partial = b""
                return buffer
            self._partial = buffer
            return b""
        complete, self._partial = buffer[: end + 2], buffer[end + 2 :]
        out = self._process(complete)
        if out.endswith(DONE_EVENT):
            self._done = True
            out = out[: -len(DONE_EVENT)]
        return out

    def finish(self) -> bytes:
        """What is left to send at the end: an unterminated last event, then [DONE]."""
        rest, self._partial = self._partial, b""
        return (self._process(rest) if rest else b"") + (DONE_EVENT if self._done else b"")

    def _process(self, complete: bytes) -> bytes:
        self.content_events += complete.count(b'"choices":[{')
        if b'"usage":{' not in complete and b'"usage": {' not in complete:
            return complete
        kept = [self._usage_event(event) for event in complete.split(EVENT_END)]
        return EVENT_END.join(event for event in kept if event is not None)

    def _usage_event(self, event: bytes) -> bytes | None:
        """Record usage found in this event; return the event to send, or None to drop it."""
        if not event.startswith(b"data:") or b'"usage"' not in event:
            return event
        try:
            chunk = orjson.loads(event[5:].strip())
        except orjson.JSONDecodeError:
            return event
        if not isinstance(chunk, dict) or not isinstance(chunk.get("usage"), dict):
            return event
        self.usage = chunk["usage"]
        if not self.strip_usage:
            return event
        if not chunk.get("choices"):
            return None  # the usage-only final chunk the client did not ask for
        chunk.pop("usage")
        return b"data: " + orjson.dumps(chunk)
