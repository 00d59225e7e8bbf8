"""The SSE relay's framing: whole events pass at once, the end marker waits for `finish()`."""

from __future__ import annotations

from controlplane.gateway.sse import DONE_EVENT, StreamRelay

CHUNK = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'


def test_done_is_held_back_until_finish_so_it_follows_the_audit_record() -> None:
    # A client may hang up as soon as it reads [DONE]: sent before the completion entry is
    # recorded, a finished stream could be recorded as cancelled.
    relay = StreamRelay(strip_usage=True)
    assert relay.feed(CHUNK + USAGE + DONE_EVENT) == CHUNK
    assert relay.usage == {"prompt_tokens": 3, "completion_tokens": 1}
    assert relay.finish() == DONE_EVENT


def test_done_split_across_reads_and_kept_usage() -> None:
    relay = StreamRelay(strip_usage=False)
    assert relay.feed(CHUNK + USAGE + DONE_EVENT[:7]) == CHUNK + USAGE
    assert relay.feed(DONE_EVENT[7:]) == b""
    assert relay.finish() == DONE_EVENT


def test_a_stream_without_done_ends_with_its_last_partial_event_only() -> None:
    relay = StreamRelay(strip_usage=True)
    assert relay.feed(CHUNK + b"data: {") == CHUNK
    assert relay.finish() == b"data: {"
