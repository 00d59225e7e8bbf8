"""Start, watch and stop the appliance's processes the way their systemd units would."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the demo itself dies, so nothing is left running."""
    os.setsid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls, name: str, argv: list[str], env: dict[str, str], log_path: Path
    ) -> ManagedProcess:
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **env}
        log = log_path.open("ab")
        popen = subprocess.Popen(
            argv,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        log.close()
        return cls(name, popen, log_path)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole process group (vLLM has workers), SIGKILL what outlives it."""
        if self.popen.poll() is not None and not _group_alive(self.popen.pid):
            return
        _signal_group(self.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None and not _group_alive(self.popen.pid):
                return
            time.sleep(0.1)
        _signal_group(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_http_ok(url: str, timeout: float, process: ManagedProcess | None = None) -> None:
    """Poll `url` until it answers 2xx; fail early with the log tail if the process died."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(
                f"{process.name} exited with {process.popen.returncode} before {url} answered:\n"
                f"{process.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback URL)
                if 200 <= response.status < 300:
                    return
                last_error = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s ({last_error})")
