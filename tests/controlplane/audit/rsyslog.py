"""A real rsyslog (Debian's `rsyslog` and `rsyslog-gnutls`) on loopback, with its own config:
plain TCP, TLS (the gtls driver, a server certificate from a test CA) and UDP inputs, each
written raw (`%rawmsg%`, one message per line) to its own file. `make test` installs both
packages (the Makefile's host-tools)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from installer.ops.tls import issue_server_certificate
from tests.controlplane.harness import free_port

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
# <PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD-ID params] MSG
SYSLOG_LINE = re.compile(
    rb"^<(?P<pri>\d+)>1 (?P<time>\S+) (?P<host>\S+) (?P<app>\S+) - (?P<msgid>\S+) "
    rb"\[sparkplane@32473 (?P<params>[^\]]*)\] (?P<msg>.*)$"
)
PARAM = re.compile(rb'(\w+)="((?:[^"\\]|\\.)*)"')

CONFIG = """
global(workDirectory="{dir}/work" maxMessageSize="256k"
       DefaultNetstreamDriverCAFile="{dir}/tls/ca.crt"
       DefaultNetstreamDriverCertFile="{dir}/tls/server.crt"
       DefaultNetstreamDriverKeyFile="{dir}/tls/server.key")
module(load="imtcp" MaxSessions="200")
module(load="imudp")
template(name="raw" type="string" string="%rawmsg%\\n")
ruleset(name="tcp") {{ action(type="omfile" file="{dir}/tcp.log" template="raw") }}
ruleset(name="tls") {{ action(type="omfile" file="{dir}/tls.log" template="raw") }}
ruleset(name="udp") {{ action(type="omfile" file="{dir}/udp.log" template="raw") }}
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="udp")
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Received:
    pri: int
    msgid: str
    params: dict[str, str]
    payload: bytes


class Rsyslog:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        issue_server_certificate(directory / "tls", ["localhost", "127.0.0.1"])
        (directory / "work").mkdir(exist_ok=True)
        self.ports = {"tcp": free_port(), "tls": free_port(), "udp": free_udp_port()}
        self.config = directory / "rsyslog.conf"
        self.config.write_text(CONFIG.format(dir=directory, **self.ports))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ca(self) -> Path:
        return self.dir / "tls" / "ca.crt"

    def target(self, scheme: str) -> str:
        return f"{scheme}://127.0.0.1:{self.ports[scheme]}"

    def start(self) -> None:
        log = (self.dir / "rsyslogd.out").open("ab")
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.config), "-i", str(self.dir / "rsyslogd.pid")],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.dir / "rsyslogd.out").read_text()[-2000:])
            try:
                for scheme in ("tcp", "tls"):
                    socket.create_connection(("127.0.0.1", self.ports[scheme]), 1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("rsyslogd did not listen within 15 s")

    def stop(self) -> None:
        """SIGTERM, as `systemctl stop` does; rsyslog finishes what it has read."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self.proc = None

    def received(self, scheme: str) -> list[Received]:
        path = self.dir / f"{scheme}.log"
        if not path.exists():
            return []
        messages = []
        for line in path.read_bytes().splitlines():
            match = SYSLOG_LINE.match(line)
            if match is None:
                raise AssertionError(f"not an RFC 5424 message from the feed: {line[:200]!r}")
            params = {k.decode(): v.decode() for k, v in PARAM.findall(match["params"])}
            messages.append(
                Received(int(match["pri"]), match["msgid"].decode(), params, match["msg"])
            )
        return messages
