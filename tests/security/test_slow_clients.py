"""Issue 17, finding 4: slow clients must not hold connections. 200 slow connections (half-open
headers, headers trickled a line at a time, a console form body trickled a byte at a time) are
open at once; a normal request from elsewhere is still answered within 100 ms, and every slow
one is closed once its deadline passes. One address cannot open more than its share. These
failed on the code before the fix (the slow connections were all still open)."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.controlplane.console.server import ConsoleServer, running_console
from tests.security.conftest import new_address

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 3.0
PER_ADDRESS = 60
KINDS = ("half-open", "trickled headers", "trickled form body")
kinds_closed: list[str] = []


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    with running_console(
        tmp_path_factory,
        header_timeout=HEADER_TIMEOUT,
        body_timeout=BODY_TIMEOUT,
        max_connections_per_address=PER_ADDRESS,
    ) as running:
        yield running


async def _slow_client(port: int, address: str, kind: str, closed: dict[int, float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
    started = time.monotonic()
    if kind == "trickled form body":
        head = (b"POST /console/signin HTTP/1.1\r\nHost: sparkplane\r\nContent-Length: 1000\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")  # fmt: skip
    else:
        head = b"GET /console/signin HTTP/1.1\r\n"
    writer.write(head)

    async def trickle() -> None:
        try:
            for n in range(1000):
                await asyncio.sleep(0.5)
                chunk = f"X-Slow-{n}: 1\r\n".encode() if kind == "trickled headers" else b"a"
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, RuntimeError):
            pass

    trickling = None if kind == "half-open" else asyncio.create_task(trickle())
    try:
        # Whatever the server answers (408, or nothing), the connection must end.
        try:
            while await asyncio.wait_for(reader.read(65536), timeout=30):
                pass
        except ConnectionResetError:
            pass  # closed while this client was still sending: the kernel resets, also closed
        closed[id(writer)] = time.monotonic() - started
        kinds_closed.append(kind)
    except TimeoutError:
        pass  # never closed
    finally:
        if trickling is not None:
            trickling.cancel()
        writer.close()


def _timed_health(url: str, address: str) -> float:
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(base_url=url, transport=transport, timeout=5) as client:
        started = time.perf_counter()
        assert client.get("/healthz").status_code == 200
        return time.perf_counter() - started


async def _flood(server: ConsoleServer) -> tuple[dict[int, float], list[float]]:
    port = int(server.url.rsplit(":", 1)[1])
    closed: dict[int, float] = {}
    addresses = [new_address() for _ in range(4)]  # 4 x 50: under the per-address bound
    clients = [
        asyncio.create_task(_slow_client(port, addresses[n % 4], KINDS[n % 3], closed))
        for n in range(200)
    ]
    await asyncio.sleep(1.0)  # all 200 are connected and stalling
    assert len(closed) == 0, "a slow connection was closed before its deadline"
    normal = new_address()
    latencies = [await asyncio.to_thread(_timed_health, server.url, normal) for _ in range(9)]
    await asyncio.gather(*clients)
    return closed, latencies


def test_slow_connections_are_closed_and_others_are_served(guarded: ConsoleServer) -> None:
    closed, latencies = asyncio.run(_flood(guarded))
    assert statistics.median(latencies) < 0.1, latencies
    assert len(closed) == 200, (f"{200 - len(closed)} slow connections were never closed",
                                Counter(kinds_closed))  # fmt: skip
    # Header deadline 2 s, body deadline 3 s (+1 s grace for the app's own 408): well under 10.
    assert max(closed.values()) < BODY_TIMEOUT + 4, sorted(closed.values())[-5:]


async def _open_many(port: int, address: str, count: int) -> int:
    """Open `count` idle connections from one address; how many the server kept open."""
    pairs = [
        await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
        for _ in range(count)
    ]
    for _, writer in pairs:
        writer.write(b"GET /healthz HTTP/1.1\r\n")  # headers under way
    await asyncio.sleep(0.5)  # well inside the header deadline

    async def kept(reader: asyncio.StreamReader) -> bool:
        try:
            data = await asyncio.wait_for(reader.read(4096), timeout=0.2)
        except TimeoutError:
            return True  # still waiting for its headers: the server kept it
        except ConnectionResetError:
            return False  # refused: its request line hit a closed socket
        assert data.startswith(b"HTTP/1.1 429"), data[:80]
        return False

    alive = sum(await asyncio.gather(*(kept(reader) for reader, _ in pairs)))
    for _, writer in pairs:
        writer.close()
    return alive


def test_one_address_cannot_hold_more_than_its_share(guarded: ConsoleServer) -> None:
    port = int(guarded.url.rsplit(":", 1)[1])
    kept = asyncio.run(_open_many(port, new_address(), PER_ADDRESS + 40))
    assert kept == PER_ADDRESS
    assert _timed_health(guarded.url, new_address()) < 1.0
