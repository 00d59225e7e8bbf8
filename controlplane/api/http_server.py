"""The HTTP server: uvicorn (httptools, uvloop) with the limits uvicorn lacks, for every route.

uvicorn closes idle keep-alive connections but has no deadline for a request's headers, and
only the /v1 routes bounded a body's time (issue 17, finding 4: half-open connections, headers
trickled a line every 5 s and a console form at 1 byte/s were all still held after a minute).
`GuardedHttpToolsProtocol` adds, per connection:

- a header deadline (`SPARKPLANE_HEADER_TIMEOUT`) from the connection's first moment, and again
  from the first byte of each later request on a kept-alive connection;
- a body deadline (`SPARKPLANE_BODY_TIMEOUT` + 1 s, so that the /v1 routes' own 408 in the one
  error shape comes first) from the end of the headers to the end of the body;
- a bound on open connections per client address (`SPARKPLANE_MAX_CONNECTIONS_PER_ADDRESS`):
  one more is answered 429 and closed before anything is read.

A deadline that passes is answered 408 and the connection closed. `server_config` builds the one
uvicorn configuration that `sparkplane serve` and the test servers run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from controlplane.api.errors import error_body
from controlplane.api.headers import RAW_SECURITY_HEADERS
from controlplane.core.config import Settings

BODY_GRACE = 1.0  # seconds past SPARKPLANE_BODY_TIMEOUT: the app's own 408 answers first
# (address, status, code): told of each answer the server gives by itself (the audit hook).
RefusalHook = Callable[[str, int, str], None]


def _raw_error(status: int, phrase: str, message: str, code: str, extra: bytes = b"") -> bytes:
    body = error_body(status, message, code=code)
    head = [f"HTTP/1.1 {status} {phrase}\r\n".encode(), b"content-type: application/json\r\n"]
    head += [name + b": " + value + b"\r\n" for name, value in RAW_SECURITY_HEADERS]
    head += [extra, f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()]
    return b"".join(head) + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body deadlines and a per-address bound.
    `server_config` makes a subclass with the settings' values as class attributes."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0 + BODY_GRACE
    max_per_address: int = 256
    on_refusal: RefusalHook | None = None

    _deadline: asyncio.TimerHandle | None = None
    _counted = False
    _in_request = False  # headers complete, response not yet

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        counts = _open_per_address(self.server_state)
        address = self._address()
        if counts.get(address, 0) >= self.max_per_address:
            message = "too many open connections from this address"
            self._refuse(429, "Too Many Requests", message, "too_many_connections",
                         b"retry-after: 1\r\n")  # fmt: skip
            return
        counts[address] = counts.get(address, 0) + 1
        self._counted = True
        self._arm(self.header_timeout, self._headers_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted:
            self._counted = False
            counts = _open_per_address(self.server_state)
            address = self._address()
            counts[address] -= 1
            if counts[address] <= 0:
                del counts[address]
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and not self._in_request:  # a new request on a kept connection
            self._arm(self.header_timeout, self._headers_timed_out)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_request = True
        self._arm(self.body_timeout, self._body_timed_out)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._in_request = False
        self._disarm()
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        """Not HTTP/1.1 the parser can read: the one error shape and the security headers, as
        every other answer (uvicorn's own is plain text without them). `msg` is the parser's."""
        self._refuse(400, "Bad Request", f"not a valid HTTP/1.1 request: {msg}",
                     "invalid_http_request")  # fmt: skip

    def _headers_timed_out(self) -> None:
        self._deadline = None
        message = "the request's headers did not arrive in time"
        self._refuse(408, "Request Timeout", message, "header_timeout")

    def _body_timed_out(self) -> None:
        self._deadline = None
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # the app answers already; it sees the disconnect
            return
        self._refuse(408, "Request Timeout", "the request body did not arrive in time",
                     "body_timeout")  # fmt: skip

    def _refuse(
        self, status: int, phrase: str, message: str, code: str, extra: bytes = b""
    ) -> None:
        self._tell(status, code)
        if not self.transport.is_closing():
            self.transport.write(_raw_error(status, phrase, message, code, extra))
            self.transport.close()
        if self.cycle is not None:  # an app still reading the body sees a disconnect
            self.cycle.disconnected = True
            self.cycle.message_event.set()

    def _tell(self, status: int, code: str) -> None:
        if self.on_refusal is not None:
            self.on_refusal(self._address(), status, code)

    def _arm(self, seconds: float, handler: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, handler)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _address(self) -> str:
        return self.client[0] if self.client else "unknown"


def _open_per_address(state: Any) -> dict[str, int]:
    """Open connections per address, kept on uvicorn's per-server state."""
    counts: dict[str, int] | None = getattr(state, "sparkplane_per_address", None)
    if counts is None:
        counts = {}
        state.sparkplane_per_address = counts
    return counts


def guarded_protocol(settings: Settings, on_refusal: RefusalHook | None = None) -> type:
    attributes = {
        "header_timeout": settings.header_timeout,
        "body_timeout": settings.body_timeout + BODY_GRACE,
        "max_per_address": settings.max_connections_per_address,
        "on_refusal": staticmethod(on_refusal) if on_refusal else None,
    }
    return type("SparkplaneHttpProtocol", (GuardedHttpToolsProtocol,), attributes)


def server_config(app: Any, settings: Settings, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration of the control plane; `options` override (tests: TLS files,
    log level). `app.state.refusals`, once the lifespan set it, hears of the server's own
    refusals (a bad request line, a deadline, too many connections)."""
    state = getattr(app, "state", None)

    def tell(address: str, status: int, code: str) -> None:
        refusals = getattr(state, "refusals", None)
        if refusals is not None:
            refusals.server_refused(address, status, code)

    values: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": guarded_protocol(settings, tell),
        "log_level": "info",
        "access_log": False,
        "timeout_graceful_shutdown": 10,
        "lifespan": "on",
    }
    values.update(options)
    return uvicorn.Config(app, **values)
