"""Start the processes a benchmark measures (upstream, Sparkplane, LiteLLM) and read their CPU/RSS.

Everything listens on 127.0.0.1 only; every process is started here and stopped by its handle.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
LITELLM_VENV = Path.home() / ".cache" / "sparkplane" / "litellm-venv"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    """Poll `url` until it answers 2xx; kill `proc` and raise if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before {url} was up")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 300:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def _children(pid: int) -> list[int]:
    """All descendants of `pid` (gateways with workers fork)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += parents.get(current, [])
    return found


@dataclass
class Proc:
    """A started process tree with CPU and memory probes."""

    name: str
    popen: subprocess.Popen[bytes]
    url: str = ""  # OpenAI base URL (.../v1)
    key: str = ""  # API key for clients, if any
    extra: dict[str, str] = field(default_factory=dict)

    def cpu_seconds(self) -> float:
        total = 0
        for pid in _children(self.popen.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # utime + stime + cutime + cstime: a worker that died and was reaped by a tree
            # member still counts (its time moved to the parent's cutime/cstime).
            total += sum(int(value) for value in fields[11:15])
        return total / CLOCK_TICKS

    def rss_mb(self) -> float:
        """Sum of RSS over the tree (what `ps` shows; overcounts pages shared by workers)."""
        total_kb = 0
        for pid in _children(self.popen.pid):
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
            except OSError:
                continue
        return total_kb / 1024

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start_script(name: str, script: str, *args: str) -> Proc:
    """`python bench/SCRIPT --port P ARGS` on a free port, once its /health answers."""
    port = free_port()
    cmd = [sys.executable, str(REPO / "bench" / script), "--port", str(port), *args]
    popen = subprocess.Popen(cmd, cwd=REPO)
    wait_http(f"http://127.0.0.1:{port}/health", 30, popen)
    return Proc(name, popen, url=f"http://127.0.0.1:{port}/v1")


def start_upstream(tokens_per_s: float = 50.0) -> Proc:
    return start_script("upstream", "upstream.py", "--tokens-per-s", str(tokens_per_s))


def start_tcp_relay(upstream_url: str) -> Proc:
    """bench/tcp_relay.py in front of the upstream: one extra hop and nothing else."""
    upstream_port = upstream_url.split(":")[-1].split("/")[0]
    return start_script("tcp-relay", "tcp_relay.py", "--upstream-port", upstream_port)


def sparkplane_env(data_dir: Path, engine_url: str, capacity: int) -> dict[str, str]:
    return {
        **os.environ,
        "SPARKPLANE_DATA_DIR": str(data_dir),
        "SPARKPLANE_ENGINE_URLS": engine_url,
        "SPARKPLANE_ENGINE_CAPACITY": str(capacity),
    }


def sparkplane_command(env: dict[str, str]) -> list[str]:
    """`sparkplane`, as the tree on env's PYTHONPATH declares it (its entry point has moved)."""
    tree = Path(env.get("PYTHONPATH") or REPO)
    tree = tree if (tree / "pyproject.toml").is_file() else REPO
    scripts = tomllib.loads((tree / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["sparkplane"].split(":")
    call = f"import sys; from {module} import {function}; sys.exit({function}())"
    return [str(VENV_BIN / "python"), "-P", "-c", call]  # -P: the tree, not the cwd, is imported


def sparkplane_cli(env: dict[str, str], *args: str) -> str:
    """Run `sparkplane ARGS`; returns stdout, raising with stderr on failure."""
    proc = subprocess.run(
        [*sparkplane_command(env), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode:
        raise RuntimeError(f"sparkplane {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def create_tenant_key(env: dict[str, str], tenant: str, *options: str) -> str:
    """Create a tenant and return a new API key (the last line of `keys create`)."""
    sparkplane_cli(env, "tenants", "create", tenant, *options)
    return sparkplane_cli(env, "keys", "create", "--tenant", tenant).strip().splitlines()[-1]


def start_sparkplane(env: dict[str, str]) -> Proc:
    """`sparkplane serve` on a free port; its log goes to serve.log in the data dir."""
    port = free_port()
    log = Path(env["SPARKPLANE_DATA_DIR"]) / "serve.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        popen = subprocess.Popen(
            [*sparkplane_command(env), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=sink,
            stderr=sink,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 60, popen)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n--- {log}:\n{log.read_text()[-3000:]}") from None
    return Proc("sparkplane", popen, url=f"http://127.0.0.1:{port}/v1")


def start_litellm(upstream_url: str, workdir: Path, workers: int = 2) -> Proc:
    """LiteLLM proxy from its own venv, no database, one model routed to the upstream."""
    binary = LITELLM_VENV / "bin" / "litellm"
    if not binary.exists():
        raise RuntimeError(
            f"LiteLLM is not installed at {LITELLM_VENV}: run `python3 -m venv {LITELLM_VENV} && "
            f"{LITELLM_VENV}/bin/pip install 'litellm[proxy]'`"
        )
    master_key = "sk-" + secrets.token_hex(24)  # LiteLLM refuses to start without one
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: bench-model\n"
        "    litellm_params:\n"
        "      model: openai/bench-model\n"
        f"      api_base: {upstream_url}\n"
        "      api_key: unused\n"
        "general_settings:\n"
        f"  master_key: {master_key}\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "NO_DOCS": "True",
    }
    popen = subprocess.Popen(
        [
            str(binary),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            str(workers),
        ],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", 180, popen)
    return Proc("litellm", popen, url=f"http://127.0.0.1:{port}/v1", key=master_key)
