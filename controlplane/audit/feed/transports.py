"""Where the SIEM feed delivers: RFC 5424 syslog over TLS (RFC 5425), TCP (RFC 6587 octet
counting) or UDP (RFC 5426), or a JSON Lines file for a local shipper.

All calls block (the feed runs them on its own thread) and are bounded by timeouts, so a receiver
that stops reading makes a send fail after `SEND_TIMEOUT`, never hang.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import socket
import ssl
import struct
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from controlplane.audit.feed.messages import FeedItem, json_line, syslog_hostname, syslog_message

CONNECT_TIMEOUT = 5.0
SEND_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0  # how long a graceful close waits for the receiver to finish reading
USER_TIMEOUT_MS = 30_000  # unacknowledged data older than this breaks the connection
SCHEMES = ("tls", "tcp", "udp", "file")
DEFAULT_PORTS = {"tls": 6514, "tcp": 514, "udp": 514}


class TargetError(ValueError):
    """SPARKPLANE_SIEM_TARGET is not a usable target."""


@dataclass(frozen=True)
class FeedTarget:
    scheme: str
    host: str = ""
    port: int = 0
    path: Path | None = None

    def __str__(self) -> str:
        return f"file://{self.path}" if self.path else f"{self.scheme}://{self.host}:{self.port}"


def parse_target(text: str) -> FeedTarget:
    """`tls://HOST[:PORT]`, `tcp://HOST[:PORT]`, `udp://HOST[:PORT]` or `file:///ABS/PATH`."""
    parts = urlsplit(text)
    if parts.scheme not in SCHEMES:
        raise TargetError(f"SIEM target {text!r} must start with tls://, tcp://, udp:// or file://")
    if parts.scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            raise TargetError(f"SIEM target {text!r}: a file target is file:///absolute/path")
        return FeedTarget("file", path=Path(parts.path))
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise TargetError(f"SIEM target {text!r} has an invalid port") from None
    if not parts.hostname or parts.path not in ("", "/"):
        raise TargetError(f"SIEM target {text!r} must look like {parts.scheme}://HOST:PORT")
    return FeedTarget(parts.scheme, parts.hostname, port)


@dataclass(frozen=True)
class TlsFiles:
    ca: Path | None = None  # None: the system's trusted CAs
    cert: Path | None = None  # a client certificate, for receivers that ask for one
    key: Path | None = None


class Transport:
    """A file or a connection; `send` raises OSError when the data may not have arrived."""

    # UDP and files: an item counts as delivered once `send` returned. TCP waits for the
    # receiver's acknowledgement (see feed/sender.py).
    confirms_on_send = True

    def __init__(self, target: FeedTarget) -> None:
        self.target = target
        self.hostname = syslog_hostname()

    def frame(self, item: FeedItem) -> bytes:
        return syslog_message(item, self.hostname)

    def open(self) -> None:
        raise NotImplementedError

    def send(self, frames: Sequence[bytes]) -> None:
        raise NotImplementedError

    def unacknowledged(self) -> int:
        """Bytes handed to the kernel that the receiver has not acknowledged yet."""
        return 0

    def alive(self) -> bool:
        return True

    def close(self, *, graceful: bool = False) -> bool:
        """Close; True if the receiver confirmed it read everything (a clean TCP close)."""
        return False

    def abort(self) -> None:
        """From another thread: make a send blocked on a receiver that stopped reading fail."""


class StreamTransport(Transport):
    """TCP or TLS: octet-counted frames (`LEN SP MSG`), the framing RFC 5425 requires."""

    confirms_on_send = False

    def __init__(self, target: FeedTarget, tls: TlsFiles | None = None) -> None:
        super().__init__(target)
        self.tls = tls
        self.sock: socket.socket | None = None
        if tls is not None:
            context = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if tls.cert is not None and tls.key is not None:
                context.load_cert_chain(tls.cert, tls.key)
            self.context: ssl.SSLContext | None = context
        else:
            self.context = None

    def frame(self, item: FeedItem) -> bytes:
        message = super().frame(item)
        return str(len(message)).encode() + b" " + message

    def open(self) -> None:
        sock = socket.create_connection((self.target.host, self.target.port), CONNECT_TIMEOUT)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            with contextlib.suppress(AttributeError, OSError):  # Linux only
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_hostname=self.target.host)
            sock.settimeout(SEND_TIMEOUT)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def send(self, frames: Sequence[bytes]) -> None:
        if self.sock is None:
            raise ConnectionError("not connected")
        self.sock.sendall(b"".join(frames))

    def unacknowledged(self) -> int:
        if self.sock is None:
            return 0
        try:
            raw = fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)
        except OSError:
            return 0  # not Linux: the settle time alone decides
        return int(struct.unpack("i", raw)[0])

    def alive(self) -> bool:
        """False once the receiver closed or reset the connection (it never sends data)."""
        sock = self.sock
        if sock is None:
            return False
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return True
        sock.setblocking(False)
        try:
            return bool(sock.recv(4096))  # b"": the receiver closed
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return True  # TLS housekeeping (a session ticket), no application data
        except OSError:
            return False
        finally:
            sock.settimeout(SEND_TIMEOUT)

    def close(self, *, graceful: bool = False) -> bool:
        sock, self.sock = self.sock, None
        if sock is None:
            return False
        try:
            return graceful and _wait_for_peer_close(sock)
        finally:
            sock.close()

    def abort(self) -> None:
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _wait_for_peer_close(sock: socket.socket) -> bool:
    """Half-close and wait for the receiver's own close: it has then read all we sent."""
    try:
        sock.settimeout(CLOSE_TIMEOUT)
        if isinstance(sock, ssl.SSLSocket):
            try:
                sock = sock.unwrap()  # close_notify, then the receiver's
            except ssl.SSLEOFError:
                return True  # it closed the connection right after reading our close_notify
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + CLOSE_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(4096):
                return True
    except (OSError, ValueError):
        pass
    return False


class DatagramTransport(Transport):
    """UDP: one message per datagram. No acknowledgement exists: delivery is best effort."""

    def __init__(self, target: FeedTarget) -> None:
        super().__init__(target)
        self.sock: socket.socket | None = None

    def open(self) -> None:
        family, kind, proto, _, address = socket.getaddrinfo(
            self.target.host, self.target.port, type=socket.SOCK_DGRAM
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.settimeout(SEND_TIMEOUT)
        sock.connect(address)
        self.sock = sock

    def send(self, frames: Sequence[bytes]) -> None:
        if self.sock is None:
            raise ConnectionError("not connected")
        for message in frames:
            self.sock.send(message)

    def close(self, *, graceful: bool = False) -> bool:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        return False


class FileTransport(Transport):
    """JSON Lines appended to a file and fsynced per batch; reopened when rotated away."""

    def __init__(self, target: FeedTarget) -> None:
        super().__init__(target)
        assert target.path is not None
        self.path = target.path
        self.fd: int | None = None

    def frame(self, item: FeedItem) -> bytes:
        return json_line(item)

    def open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def send(self, frames: Sequence[bytes]) -> None:
        if self.fd is None or self._rotated():
            self.close()
            self.open()
        assert self.fd is not None
        view = memoryview(b"".join(frames))
        while view:
            view = view[os.write(self.fd, view) :]
        os.fsync(self.fd)

    def _rotated(self) -> bool:
        assert self.fd is not None
        try:
            return os.stat(self.path).st_ino != os.fstat(self.fd).st_ino
        except FileNotFoundError:
            return True

    def close(self, *, graceful: bool = False) -> bool:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        return False


def make_transport(target: FeedTarget, tls: TlsFiles | None = None) -> Transport:
    if target.scheme == "file":
        return FileTransport(target)
    if target.scheme == "udp":
        return DatagramTransport(target)
    return StreamTransport(target, (tls or TlsFiles()) if target.scheme == "tls" else None)
