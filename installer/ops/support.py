"""`sparkplane support-bundle`: what a vendor needs to help, with every secret redacted.

Collected: preflight JSON, versions, status, rendered config and units, installer events,
ansible artifacts, unit status and recent logs. Never collected: the database, private keys,
peppers, tokens, the secrets directory (installer/ops/redact.py decides); every text file passes
through `redact_text`.
"""

from __future__ import annotations

import io
import json
import platform
import shutil
import subprocess
import tarfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from controlplane.appliance.layout import Layout
from installer import __version__
from installer.bundle.manifest import ManifestError, parse_manifest
from installer.host.facts import collect_host_facts
from installer.host.preflight import BundleNeeds, run_preflight
from installer.lifecycle.status import appliance_status
from installer.lifecycle.units import ALL_UNITS
from installer.ops.redact import is_secret_file, redact_text
from installer.provision.release_cli import saved_host_vars

MAX_FILE_BYTES = 5 * 1024 * 1024
LOG_LINES = 500


class _Collector:
    def __init__(
        self, archive: tarfile.TarFile, prefix: str, secret_dirs: Sequence[Path] = ()
    ) -> None:
        self.archive = archive
        self.prefix = prefix
        self.secret_dirs = secret_dirs
        self.skipped: list[str] = []

    def add_text(self, name: str, text: str) -> None:
        data = redact_text(text).encode("utf-8")
        info = tarfile.TarInfo(f"{self.prefix}/{name}")
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
        self.archive.addfile(info, io.BytesIO(data))

    def add_json(self, name: str, value: Any) -> None:
        self.add_text(name, json.dumps(value, indent=2, sort_keys=True, default=str))

    def add_file(self, name: str, path: Path) -> None:
        if is_secret_file(path, self.secret_dirs) or path.is_symlink():
            self.skipped.append(f"{path} (secret by nature)")
            return
        if path.stat().st_size > MAX_FILE_BYTES:
            self.skipped.append(f"{path} (larger than {MAX_FILE_BYTES} bytes)")
            return
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, PermissionError):
            self.skipped.append(f"{path} (binary or unreadable)")
            return
        self.add_text(name, text)

    def add_tree(self, name: str, directory: Path, pattern: str = "*") -> None:
        if not directory.is_dir():
            return
        for path in sorted(directory.rglob(pattern)):
            if path.is_file():
                self.add_file(f"{name}/{path.relative_to(directory)}", path)


def _versions(layout: Layout) -> dict[str, Any]:
    versions: dict[str, Any] = {
        "sparkplane_installer": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    for package in ("ansible-core", "ansible-runner"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    for venv in ("engine-venv", "controlplane-venv"):
        dists = sorted(layout.current.glob(f"{venv}/lib/python*/site-packages/*.dist-info"))
        versions[venv] = [d.name.removesuffix(".dist-info") for d in dists]
    return versions


def _command(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}"


def _services(collector: _Collector, layout: Layout) -> None:
    """systemd status and journal on a real root; the demo's log files otherwise."""
    if layout.root == Path("/") and shutil.which("systemctl"):
        for unit in ALL_UNITS:
            collector.add_text(f"services/{unit}.status", _command(["systemctl", "status", unit]))
            collector.add_text(
                f"logs/{unit}.log",
                _command(["journalctl", "--unit", unit, "--lines", str(LOG_LINES), "--no-pager"]),
            )
    collector.add_tree("logs/files", layout.root / "var" / "log" / "sparkplane", "*.log")
    collector.add_tree("logs/files", layout.var / "logs", "*.log")


def _data_listing(layout: Layout) -> list[dict[str, Any]]:
    """Names and sizes only: the data directory holds the database and the audit key."""
    data = layout.controlplane_data
    if not data.is_dir():
        return []
    return [
        {"path": str(p.relative_to(data)), "bytes": p.stat().st_size}
        for p in sorted(data.rglob("*"))
        if p.is_file()
    ]


def _secret_dirs(layout: Layout) -> list[Path]:
    """The secrets directory the release was installed with, when the site moved it."""
    configured = saved_host_vars(layout).get("sparkplane_secrets_dir")
    return [Path(configured)] if configured else []


def build_support_bundle(root: Path, out: Path) -> list[str]:
    """Write the tar.gz; returns what was deliberately left out."""
    layout = Layout.at(root)
    prefix = f"sparkplane-support-{time.strftime('%Y%m%dT%H%M%S')}"
    with tarfile.open(out, "w:gz") as archive:
        collector = _Collector(archive, prefix, _secret_dirs(layout))
        facts = collect_host_facts()
        manifest_path = layout.current / "manifest.json"
        try:
            needs = BundleNeeds.from_manifest(parse_manifest(manifest_path.read_bytes()))
        except (OSError, ManifestError):
            needs = BundleNeeds(facts.machine, "cpu", "wheelhouse", 0, 0, 0)
        collector.add_json("preflight.json", run_preflight(facts, needs, layout, {}).as_dict())
        collector.add_json("host.json", asdict(facts))
        collector.add_json("versions.json", _versions(layout))
        collector.add_json("status.json", appliance_status(root))
        collector.add_json("controlplane-data-listing.json", _data_listing(layout))
        collector.add_tree("config/etc-sparkplane", layout.etc)
        collector.add_tree("config/systemd", layout.systemd, "sparkplane-*")
        if manifest_path.is_file():
            collector.add_file("release/manifest.json", manifest_path)
        if layout.events.is_file():
            collector.add_file("installer/events.jsonl", layout.events)
        collector.add_tree("installer/ansible-artifacts", layout.artifacts / "artifacts")
        _services(collector, layout)
        collector.add_json("left-out.json", collector.skipped)
    out.chmod(0o600)
    return collector.skipped
