"""The HTTP/1.1 wire to an engine: one keep-alive connection and the response it carries.

A request is written in one piece (`encode_request`); the response is parsed by httptools
(uvicorn's parser) fed from an asyncio protocol: status and headers, then a body read whole or
chunk by chunk with back-pressure, one deadline, and the errors that tell a stale pooled
connection from a broken answer. The connection knows nothing of pooling: it hands itself back
through the two callbacks it was made with (`client.py` keeps the pool).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping

import httptools

READ_PAUSE_BYTES = 1 << 20  # stop reading from the engine while this much waits for the client


class EngineHTTPError(Exception):
    """The engine could not be talked to; the message says how (never includes the body)."""


class EngineConnectError(EngineHTTPError):
    """No connection could be made: nothing reached the engine, another one may be tried."""


class EngineDisconnected(EngineHTTPError):
    """The connection closed or broke before the response was complete."""

    def __init__(self, message: str, *, response_started: bool) -> None:
        super().__init__(message)
        self.response_started = response_started


def encode_request(
    method: str, path: str, host: bytes, body: bytes, headers: Mapping[str, str] | None
) -> bytes:
    """The request's bytes: head and body, written to the connection in one piece."""
    lines = [
        f"{method} {path} HTTP/1.1".encode("ascii"),
        b"Host: " + host,
        b"Content-Length: " + str(len(body)).encode("ascii"),
        b"Accept-Encoding: identity",  # bodies are relayed as they come: never compressed
    ]
    for name, value in (headers or {}).items():
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name} holds a line break")
        lines.append(f"{name}: {value}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class EngineResponse:
    """One response: status and headers once `request` returns, then the body."""

    def __init__(self, connection: EngineConnection) -> None:
        self._connection = connection
        self._loop = connection.loop
        self.status = 0
        self.headers: dict[str, str] = {}
        self._raw_headers: list[tuple[bytes, bytes]] = []
        # Done when the status and headers are in (or with the error that came first).
        self.head: asyncio.Future[None] = self._loop.create_future()
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self.started = False  # a byte of the response has arrived
        self.complete = False
        self._keep_alive = False
        self._released = False

    @property
    def delimited_by_close(self) -> bool:
        """The body ends where the connection does (no Content-Length, not chunked)."""
        headers = self.headers
        return "content-length" not in headers and "chunked" not in headers.get(
            "transfer-encoding", ""
        )

    @property
    def content_type(self) -> str:
        """The media type alone, lower-case (no parameters), as aiohttp's `content_type`."""
        value = self.headers.get("content-type", "application/octet-stream")
        return value.split(";", 1)[0].strip().lower()

    async def read(self) -> bytes:
        """The whole body."""
        while not self.complete:
            await self._wait()
        return b"".join(self._chunks)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (not split into lines or events)."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered < READ_PAUSE_BYTES:
                    self._connection.resume_reading()
                yield chunk
            elif self.complete:
                return
            else:
                await self._wait()

    def close(self) -> None:
        """Release the connection: given back for the next request if the response was read to
        its end and the engine keeps it alive, otherwise closed (an unfinished generation is
        aborted)."""
        if self._released:
            return
        self._released = True
        if self._deadline is not None:
            self._deadline.cancel()
        self._connection.release(reusable=self.complete and self._keep_alive)

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---- fed by the connection ------------------------------------------------------------

    def _on_head(self, status: int) -> None:
        self.status = status
        self.headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in self._raw_headers
        }
        if not self.head.done():
            self.head.set_result(None)

    def _on_body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered >= READ_PAUSE_BYTES:
            self._connection.pause_reading()  # the client is slower than the engine
        self._wake()

    def _on_complete(self, keep_alive: bool) -> None:
        self.complete, self._keep_alive = True, keep_alive
        if self._deadline is not None:
            self._deadline.cancel()
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self.complete or self._error is not None:
            return
        self._error = error
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved here: `request` re-raises it from _error
        self._wake()

    def _timed_out(self) -> None:
        self._fail(TimeoutError("the engine did not answer in time"))
        self._connection.close()


class EngineConnection(asyncio.Protocol):
    """One connection. `give_back(self)` when it may serve another request, `forget(self)`
    once it is closed."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        give_back: Callable[[EngineConnection], None],
        forget: Callable[[EngineConnection], None],
    ) -> None:
        self.loop = loop
        self._give_back = give_back
        self._forget = forget
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: EngineResponse | None = None
        self.open = False
        self.reused = False
        self.idle_since = 0.0
        self._paused = False

    # ---- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.open = True

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # nothing was asked: an engine never does this; drop it
            self.close()
            return
        response.started = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response._fail(EngineDisconnected(f"malformed response: {exc}", response_started=True))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._forget(self)
        response = self.response
        if response is None or response.complete:
            return
        if response.status and response.delimited_by_close:
            response._on_complete(keep_alive=False)  # a body delimited by the connection's end
            return
        reason = f": {exc}" if exc else ""
        message = f"the engine closed the connection{reason}"
        response._fail(EngineDisconnected(message, response_started=response.started))

    # ---- httptools callbacks -------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.response is not None
        self.response._on_head(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response._on_body(body)

    def on_message_complete(self) -> None:
        assert self.response is not None
        self.response._on_complete(self.parser.should_keep_alive())

    # ---- used by the client and the response ---------------------------------------------

    def send(self, request: bytes, deadline: float) -> EngineResponse:
        assert self.transport is not None
        self.response = response = EngineResponse(self)
        response._deadline = self.loop.call_at(deadline, response._timed_out)
        self.transport.write(request)
        return response

    def release(self, *, reusable: bool) -> None:
        self.response = None
        if reusable and self.open:
            self.resume_reading()
            self._give_back(self)
        else:
            self.close()

    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and self.transport is not None and self.open:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
