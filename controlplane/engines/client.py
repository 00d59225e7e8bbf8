"""A small HTTP/1.1 keep-alive client for the engines: the connection pool and the request API.

The relay is the gateway's hot path, and a general-purpose client's per-request machinery
cost more than everything else the relay does (aiohttp's was a third of the event loop's CPU at
200 req/s; `bench/engine_client.py`: 184 µs of CPU per call against this client's 84 µs). This
client does only what talking to one known engine needs: one pool of idle connections per
engine, one deadline per request, a stale pooled connection retried on a new one, and closing
the connection when a response is abandoned (which is how vLLM learns to abort a generation).
The wire itself (writing the request, parsing the response with httptools) is `connection.py`.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

from controlplane.engines.connection import (
    EngineConnectError,
    EngineConnection,
    EngineDisconnected,
    EngineHTTPError,
    EngineResponse,
    encode_request,
)

__all__ = [
    "EngineClient",
    "EngineConnectError",
    "EngineDisconnected",
    "EngineHTTPError",
    "EngineResponse",
]

STALE_CONNECTION_RETRIES = 3


class EngineClient:
    """Keep-alive connections to one engine's origin (scheme://host:port)."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0, keepalive: float = 4.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"engine URL must be http(s)://host[:port][/path], not {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if parts.scheme == "https" else None
        )
        self.base_path = parts.path.rstrip("/")  # e.g. "/v1"; `request` takes full paths
        self._host_header = parts.netloc.rsplit("@", 1)[-1].encode("ascii")
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.loop = asyncio.get_running_loop()
        self._idle: list[EngineConnection] = []
        self._busy: set[EngineConnection] = set()

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        time_limit: float,
    ) -> EngineResponse:
        """Send a request; returns once the status and headers are in (the body follows).

        `time_limit` (seconds) covers the whole exchange up to the body's end, which is
        why it is not an `asyncio.timeout` around this call. EngineConnectError when no
        connection can be made, EngineDisconnected when one breaks, TimeoutError past the
        deadline. A pooled connection the engine closed just as it was reused (its keep-alive
        ran out: the engine never read the request) is retried on a new one."""
        deadline = self.loop.time() + time_limit
        request = encode_request(method, path, self._host_header, body, headers)
        retries = STALE_CONNECTION_RETRIES
        while True:
            connection = self._take_idle() or await self._connect(deadline)
            response = connection.send(request, deadline)
            try:
                await response.head
                return response
            except EngineDisconnected as exc:
                response.close()
                if connection.reused and not exc.response_started and retries > 0:
                    retries -= 1
                    continue
                raise
            except BaseException:
                response.close()  # cancelled or timed out: drop the connection, abort the work
                raise

    async def close(self) -> None:
        for connection in [*self._idle, *self._busy]:
            connection.close()
        self._idle.clear()
        self._busy.clear()

    def _take_idle(self) -> EngineConnection | None:
        now = self.loop.time()
        while self._idle:
            connection = self._idle.pop()  # the most recently used: the least likely stale
            if connection.open and now - connection.idle_since < self.keepalive:
                connection.reused = True
                self._busy.add(connection)
                return connection
            connection.close()
        return None

    async def _connect(self, deadline: float) -> EngineConnection:
        timeout = max(0.001, min(self.connect_timeout, deadline - self.loop.time()))
        try:
            async with asyncio.timeout(timeout):
                _, connection = await self.loop.create_connection(
                    self._new_connection, self.host, self.port, ssl=self.ssl
                )
        except (OSError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            where = f"{self.host}:{self.port}"
            raise EngineConnectError(f"cannot connect to {where}: {detail}") from exc
        self._busy.add(connection)
        return connection

    def _new_connection(self) -> EngineConnection:
        return EngineConnection(self.loop, self._give_back, self._forget)

    def close_expired(self) -> None:
        """Close idle connections unused for `keepalive` seconds (called by the health loop)."""
        now = self.loop.time()
        expired = 0  # the idle list is in the order connections came back: oldest first
        while expired < len(self._idle) and now - self._idle[expired].idle_since >= self.keepalive:
            expired += 1
        stale, self._idle = self._idle[:expired], self._idle[expired:]
        for connection in stale:
            connection.close()

    def _give_back(self, connection: EngineConnection) -> None:
        self._busy.discard(connection)
        connection.idle_since = self.loop.time()
        self._idle.append(connection)

    def _forget(self, connection: EngineConnection) -> None:
        self._busy.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)
