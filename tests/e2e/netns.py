"""A network namespace with only loopback, and strace's record of every connect() in it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any

# connect() targets that stay on the machine: loopback and local (unix/netlink) sockets.
_CONNECT = re.compile(r"connect\(\d+, \{sa_family=(AF_\w+)(.*?)\}")
_LOCAL_ADDRESS = re.compile(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"|"::ffff:127\.')


class NetworkNamespace:
    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def create(cls, purpose: str = "e2e") -> NetworkNamespace:
        name = f"sparkplane-{purpose}-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        # A new namespace's loopback is down: nothing, not even 127.0.0.1, answers until it is up.
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        return cls(name)

    def __enter__(self) -> NetworkNamespace:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)

    def _argv(self, argv: list[str], strace_to: Path | None) -> list[str]:
        prefix = ["ip", "netns", "exec", self.name]
        if strace_to is not None:
            prefix += ["strace", "-f", "--seccomp-bpf", "-qq", "-e", "trace=connect",
                       "-e", "signal=none", "-o", str(strace_to)]  # fmt: skip
        return prefix + argv

    def run(
        self, argv: list[str], strace_to: Path | None = None, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._argv(argv, strace_to), capture_output=True, text=True, check=False, **kwargs
        )

    def popen(self, argv: list[str], strace_to: Path | None = None, **kwargs: Any) -> Any:
        return subprocess.Popen(self._argv(argv, strace_to), text=True, **kwargs)


def signal_traced(popen: subprocess.Popen[str], sig: int) -> None:
    """Signal the program strace runs (strace itself would only detach on SIGTERM)."""
    try:
        children = Path(f"/proc/{popen.pid}/task/{popen.pid}/children").read_text().split()
    except OSError:
        children = []
    os.kill(int(children[0]) if children else popen.pid, sig)


def outbound_connects(trace: Path) -> list[str]:
    """Every connect() in a strace log that aimed anywhere but this machine."""
    leaving = []
    for line in trace.read_text(errors="replace").splitlines():
        match = _CONNECT.search(line)
        if not match:
            continue
        family, rest = match.groups()
        if family in ("AF_UNIX", "AF_NETLINK", "AF_UNSPEC"):
            continue
        if not _LOCAL_ADDRESS.search(rest):
            leaving.append(line.strip())
    return leaving
