"""What the installer left on the box, read for the System page; absent facts stay None.

Nothing here is invented: a file that is missing or unreadable shows as "not available".
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509

from controlplane.appliance.events import read_events
from controlplane.appliance.layout import Layout, read_args_file, read_env_file

T = TypeVar("T")
DATA_DIR_TAIL = ("var", "lib", "sparkplane", "controlplane")
# Engine flags worth showing on the System page, in this order.
ENGINE_FLAGS = (
    "--served-model-name", "--max-model-len", "--max-num-seqs", "--kv-cache-dtype",
    "--gpu-memory-utilization", "--scheduling-policy", "--speculative-config", "--port", "--host",
)  # fmt: skip


@dataclass(frozen=True)
class Certificate:
    path: str
    subject: str
    not_after: datetime
    days_left: int


@dataclass
class SystemInfo:
    root: Path | None
    active_version: str | None = None
    manifest: dict[str, Any] | None = None
    releases: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    engine_flags: list[tuple[str, str]] = field(default_factory=list)
    profile: str | None = None
    plan: dict[str, Any] | None = None
    preflight: dict[str, Any] | None = None
    certificates: list[Certificate] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def appliance_root(settings: Any) -> Path | None:
    """The install root: an explicit setting, else derived from the standard data dir."""
    explicit = getattr(settings, "appliance_root", None)
    if explicit:
        return Path(explicit)
    data_dir = Path(settings.data_dir).absolute()
    if data_dir.parts[-4:] == DATA_DIR_TAIL:
        return data_dir.parents[3]
    return None


def _json_file(path: Path, problems: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(f"{path}: {exc}")
        return None
    return loaded if isinstance(loaded, dict) else None


def _readable(read: Callable[[Any], T], source: Any, problems: list[str]) -> T | None:
    """`read(source)`, or None with the reason noted: a file the service user may not read
    (the installer writes as root) shows as "not available", it never fails the page."""
    try:
        return read(source)
    except (OSError, ValueError) as exc:
        problems.append(f"{getattr(source, 'events', source)}: {exc}")
        return None


def engine_flags(args: list[str]) -> list[tuple[str, str]]:
    """Pairs of (flag, value) for the flags the page shows; bare flags get "on"."""
    pairs: dict[str, str] = {}
    for index, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag not in ENGINE_FLAGS:
            continue
        if not eq:
            following = args[index + 1] if index + 1 < len(args) else ""
            value = following if following and not following.startswith("--") else "on"
        pairs[flag] = value
    return [(flag, pairs[flag]) for flag in ENGINE_FLAGS if flag in pairs]


def certificates(tls_dir: Path, now: datetime, problems: list[str]) -> list[Certificate]:
    found = []
    for path in sorted(tls_dir.glob("*")) if tls_dir.is_dir() else []:
        if path.suffix not in {".pem", ".crt"} or "key" in path.name:
            continue
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: not a PEM certificate ({exc})")
            continue
        not_after = cert.not_valid_after_utc
        found.append(Certificate(str(path), cert.subject.rfc4514_string(), not_after,
                                 (not_after - now).days))  # fmt: skip
    return found


def read_system_info(root: Path | None, now: datetime | None = None) -> SystemInfo:
    info = SystemInfo(root)
    if root is None or not root.is_dir():
        return info
    now = now or datetime.now(UTC)
    layout = Layout.at(root)
    info.active_version = layout.active_version()
    if info.active_version:
        info.manifest = _json_file(layout.release(info.active_version) / "manifest.json",
                                   info.problems)  # fmt: skip
    for version in layout.installed_versions():
        complete = layout.release(version) / ".complete"
        info.releases.append({
            "version": version, "active": version == info.active_version,
            "installed": datetime.fromtimestamp(complete.stat().st_mtime, UTC),
        })  # fmt: skip
    info.events = list(reversed(_readable(read_events, layout, info.problems) or []))[:20]
    if layout.engine_args.is_file():
        args = _readable(read_args_file, layout.engine_args, info.problems)
        info.engine_flags = engine_flags(args or [])
    if layout.engine_env.is_file():
        env = _readable(read_env_file, layout.engine_env, info.problems) or {}
        info.profile = env.get("SPARKPLANE_ENGINE_PROFILE")
    info.plan = _json_file(layout.installer_state / "plan.json", info.problems)
    if info.profile is None and info.plan is not None:
        info.profile = info.plan.get("profile")
    if info.profile is None:  # the last install/upgrade event that names its profile
        info.profile = next((str(e["profile"]) for e in info.events if e.get("profile")), None)
    info.preflight = _json_file(layout.installer_state / "preflight.json", info.problems)
    info.certificates = certificates(layout.tls, now, info.problems)
    return info


def disk_usage(path: Path) -> tuple[int, int] | None:
    """(used, total) bytes of the file system holding `path`, None if it does not exist."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return usage.used, usage.total
