"""`sparkplane status`: release, services, engine, model and health of one appliance root."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from controlplane.appliance.events import read_events
from controlplane.appliance.layout import Layout, read_args_file, read_env_file
from installer.lifecycle.loopback import controlplane_loopback
from installer.lifecycle.units import ALL_UNITS
from installer.provision.apply import RELEASE_VARS


def probe(url: str, timeout: float = 2.0, context: ssl.SSLContext | None = None) -> str:
    """'ok' when `url` answers 2xx, else a short reason."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310 - loopback
            return "ok" if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"down ({reason})"


def unit_states(layout: Layout) -> dict[str, str]:
    """systemd's view, only on a real root where systemctl exists."""
    if layout.root != Path("/") or shutil.which("systemctl") is None:
        return {unit: "not managed here" for unit in ALL_UNITS}
    states = {}
    for unit in ALL_UNITS:
        done = subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True)
        states[unit] = done.stdout.strip() or "unknown"
    return states


def _arg(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args and args.index(flag) + 1 < len(args) else None


def appliance_status(root: Path, probe_health: bool = True) -> dict[str, Any]:
    layout = Layout.at(root)
    active = layout.active_version()
    status: dict[str, Any] = {
        "root": str(layout.root),
        "current": active,
        "releases": layout.installed_versions(),
        "half_installed": sorted(
            p.name for p in layout.releases.glob("*") if not (p / ".complete").exists()
        )
        if layout.releases.is_dir()
        else [],
    }
    if active is not None:
        saved = layout.release(active) / RELEASE_VARS
        if saved.is_file():
            status["profile"] = json.loads(saved.read_text())["extravars"][
                "sparkplane_engine_profile"
            ]
    if layout.engine_args.is_file():
        args = read_args_file(layout.engine_args)
        port = _arg(args, "--port") or "8000"
        status["model"] = {
            "served_name": _arg(args, "--served-model-name"),
            "path": _arg(args, "--model"),
        }
        status["engine"] = {"url": f"http://127.0.0.1:{port}"}
        if probe_health:
            status["engine"]["health"] = probe(f"http://127.0.0.1:{port}/health")
    if layout.controlplane_env.is_file():
        env = read_env_file(layout.controlplane_env)
        # HTTPS when controlplane.env names a certificate: pinned to it, not to a name.
        url, context = controlplane_loopback(env)
        status["controlplane"] = {"url": url}
        if probe_health:
            status["controlplane"]["ready"] = probe(f"{url}/readyz", context=context)
    status["services"] = unit_states(layout)
    events = read_events(layout)
    status["last_event"] = events[-1] if events else None
    return status
