"""Plain TCP receivers on 127.0.0.1 for the SIEM feed: one that reads and discards, and one that
accepts and never reads (the sender's socket buffers fill, its sends block)."""

from __future__ import annotations

import socket
import threading


class TcpReceiver:
    def __init__(self, *, stuck: bool) -> None:
        self.stuck = stuck
        self.sock = socket.socket()
        if stuck:  # a small window: the sender's buffers fill sooner
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port: int = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            if not self.stuck:
                threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    @staticmethod
    def _drain(conn: socket.socket) -> None:
        while True:
            try:
                if not conn.recv(1 << 16):
                    return
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()
