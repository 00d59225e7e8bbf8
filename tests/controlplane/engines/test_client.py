"""The engine client against raw HTTP servers on loopback that misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from controlplane.engines.client import EngineClient, EngineConnectError, EngineDisconnected
from controlplane.engines.connection import READ_PAUSE_BYTES

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


@dataclass
class Server:
    """A TCP server on 127.0.0.1 running `handler` per connection; counts what it saw."""

    handler: Handler
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed_by_client: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self)
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return head + body

    async def answer_ok(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one request and answer it 200 with a small JSON body (keep-alive)."""
        await self.read_request(reader)
        writer.write(OK)
        await writer.drain()

    async def wait_for_eof(self, reader: asyncio.StreamReader) -> None:
        if not await reader.read(1):
            self.closed_by_client.set()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> Server:
        server = Server(handler)
        listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
        server.port = listener.sockets[0].getsockname()[1]
        servers.append(listener)
        return server

    yield start
    for listener in servers:
        listener.close()


def client_for(server: Server, **options: float) -> EngineClient:
    return EngineClient(f"http://127.0.0.1:{server.port}/v1", **options)


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError):  # the client closed: done
        while True:
            await s.answer_ok(reader, writer)


async def test_request_format_and_connection_reuse(serve: Callable[..., Awaitable[Server]]) -> None:
    server = await serve(keep_alive)
    client = client_for(server)
    for _ in range(3):
        response = await client.request(
            "POST", "/v1/chat/completions", b'{"a":1}', {"X-Id": "r1"}, time_limit=5
        )
        assert (response.status, response.content_type, await response.read()) == (
            200,
            "application/json",
            b"{}",
        )
        response.close()
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in first
    assert b"Content-Length: 7\r\n" in first and b"X-Id: r1\r\n" in first
    assert b"Accept-Encoding: identity\r\n" in first
    assert first.endswith(b'\r\n\r\n{"a":1}')
    await client.close()


async def test_idle_connections_are_closed_after_the_keepalive(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def answer_then_wait(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.answer_ok(r, w)
        await s.wait_for_eof(r)

    server = await serve(answer_then_wait)
    client = client_for(server, keepalive=0.2)
    response = await client.request("GET", "/health", time_limit=5)
    await response.read()
    response.close()
    client.close_expired()
    await asyncio.sleep(0.05)
    assert not server.closed_by_client.is_set()  # still fresh: kept for reuse
    await asyncio.sleep(0.3)
    client.close_expired()
    await asyncio.wait_for(server.closed_by_client.wait(), 5)
    await client.close()


async def test_a_pooled_connection_closed_by_the_engine_is_retried(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def one_answer(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.answer_ok(r, w)
        await s.read_request(r)  # the next one meets a closing connection: never answered

    server = await serve(one_answer)
    client = client_for(server)
    for _ in range(3):
        response = await client.request("POST", "/tokenize", b"{}", time_limit=5)
        assert await response.read() == b"{}"
        response.close()
    # Requests 2 and 3 each went out on the pooled connection first, then on a new one.
    assert server.connections == 3
    assert len(server.requests) == 5
    await client.close()


async def test_engine_closing_a_new_connection_unanswered(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def hang_up(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)

    server = await serve(hang_up)
    client = client_for(server)
    with pytest.raises(EngineDisconnected) as caught:
        await client.request("POST", "/v1/completions", b"{}", time_limit=5)
    assert not caught.value.response_started
    assert server.connections == 1  # a new connection is not retried: the engine read it
    await client.close()


async def test_nobody_listening_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connection refused
        client = EngineClient(f"http://127.0.0.1:{port}/v1")
        with pytest.raises(EngineConnectError, match=f"cannot connect to 127.0.0.1:{port}"):
            await client.request("GET", "/health", time_limit=5)
    await client.close()


async def test_time_limit_covers_the_body_and_drops_the_connection(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def slow_body(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        await w.drain()
        await s.wait_for_eof(r)

    server = await serve(slow_body)
    client = client_for(server)
    response = await client.request("GET", "/v1/models", time_limit=0.3)
    assert response.status == 200
    with pytest.raises(TimeoutError):
        await response.read()
    response.close()
    await asyncio.wait_for(server.closed_by_client.wait(), 5)
    await client.close()


async def test_chunks_arrive_before_the_body_ends_and_close_aborts(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    release = asyncio.Event()

    async def stream(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"6\r\ndata: \r\n"
        )
        await w.drain()
        await release.wait()
        w.write(b"5\r\nhello\r\n")
        await w.drain()
        await s.wait_for_eof(r)  # never ends the body: the client has to give up on it

    server = await serve(stream)
    client = client_for(server)
    response = await client.request("POST", "/v1/chat/completions", b"{}", time_limit=5)
    assert response.content_type == "text/event-stream"
    chunks = response.iter_chunks()
    assert await anext(chunks) == b"data: "
    release.set()
    assert await anext(chunks) == b"hello"
    response.close()  # abandoned mid-body: the connection goes, the engine sees the abort
    await asyncio.wait_for(server.closed_by_client.wait(), 5)
    assert not client._idle
    await client.close()


async def test_body_ended_by_closing_the_connection(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def until_close(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(b"HTTP/1.0 503 Service Unavailable\r\n\r\nengine starting")

    server = await serve(until_close)
    client = client_for(server)
    response = await client.request("GET", "/health", time_limit=5)
    assert (response.status, await response.read()) == (503, b"engine starting")
    response.close()
    await client.close()


async def test_malformed_and_truncated_responses(serve: Callable[..., Awaitable[Server]]) -> None:
    async def garbage(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(b"SPDY/9 what\r\n\r\n")
        await s.wait_for_eof(r)

    async def truncated(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")

    for handler in (garbage, truncated):
        server = await serve(handler)
        client = client_for(server)
        with pytest.raises(EngineDisconnected) as caught:
            response = await client.request("GET", "/health", time_limit=5)
            await response.read()
        assert caught.value.response_started is True
        await client.close()


async def test_reading_pauses_while_the_client_lags(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    size = 16 * READ_PAUSE_BYTES

    async def big(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
        for _ in range(size // 65536):
            w.write(b"x" * 65536)
            await w.drain()

    server = await serve(big)
    client = client_for(server)
    response = await client.request("GET", "/v1/files", time_limit=30)
    await asyncio.sleep(0.5)  # nobody reads: the engine's writes back up instead of our memory
    assert response._buffered < 2 * READ_PAUSE_BYTES
    received = 0
    async for chunk in response.iter_chunks():
        received += len(chunk)
    assert received == size and response.complete
    response.close()
    await client.close()


def test_engine_urls_are_checked() -> None:
    with pytest.raises(ValueError, match="http"):
        EngineClient("ftp://engine/v1")
