"""The floor of any gateway: a bare TCP relay (uvloop) that copies bytes both ways, nothing else.

A gateway adds one network hop between the client and the engine. This relay adds exactly that
hop and does no HTTP work, no auth and no audit, so its added latency is what the machine
charges for the hop itself (wake-ups, two extra socket round trips); `gateway_overhead` reports
it next to Sparkplane.

    python bench/tcp_relay.py --port 9200 --upstream-port 9100
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import uvloop


class Pipe(asyncio.Protocol):
    """One direction's sink: what arrives on this connection is written to `peer`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: asyncio.Transport | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.pending.append(data)  # the upstream connection is not up yet
        else:
            self.peer.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()

    def attach(self, peer: asyncio.Transport) -> None:
        self.peer = peer
        for data in self.pending:
            peer.write(data)
        self.pending.clear()


async def serve(port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    connecting: set[asyncio.Task[None]] = set()  # referenced until done (asyncio keeps weak refs)

    def accepted() -> Pipe:
        client_side = Pipe()

        async def connect() -> None:
            upstream_transport, upstream_side = await loop.create_connection(
                Pipe, "127.0.0.1", upstream_port
            )
            assert client_side.transport is not None
            upstream_side.attach(client_side.transport)
            client_side.attach(upstream_transport)

        task = loop.create_task(connect())
        connecting.add(task)
        task.add_done_callback(connecting.discard)
        return client_side

    server = await loop.create_server(accepted, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.upstream_port))


if __name__ == "__main__":
    main()
