"""The appliance file system under a root (docs/architecture.md "Appliance file system").

The playbook computes the same paths from `sparkplane_root` (playbooks/group_vars); the install
tests check that both agree by looking for the files at these paths after a real run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from controlplane.core.envfile import read_env_file

ENGINE_MODULE = "vllm.entrypoints.openai.api_server"


@dataclass(frozen=True)
class Layout:
    """Every path the installer writes, for one appliance root."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> Layout:
        return cls(Path(root).absolute())

    @property
    def opt(self) -> Path:
        return self.root / "opt" / "sparkplane"

    @property
    def releases(self) -> Path:
        return self.opt / "releases"

    def release(self, version: str) -> Path:
        return self.releases / version

    @property
    def current(self) -> Path:
        return self.opt / "current"

    @property
    def var(self) -> Path:
        return self.root / "var" / "lib" / "sparkplane"

    @property
    def models(self) -> Path:
        return self.var / "models"

    @property
    def controlplane_data(self) -> Path:
        return self.var / "controlplane"

    @property
    def engine_state(self) -> Path:
        """vLLM's cache root and TMPDIR (ZMQ sockets): owned by the installer, not by /tmp."""
        return self.var / "engine"

    @property
    def installer_state(self) -> Path:
        return self.var / "installer"

    @property
    def events(self) -> Path:
        return self.installer_state / "events.jsonl"

    @property
    def artifacts(self) -> Path:
        return self.installer_state / "runner"

    @property
    def backups(self) -> Path:
        return self.var / "backups"

    @property
    def reports(self) -> Path:
        """`sparkplane validate`'s reports (JSON + HTML): the box's measured capacity."""
        return self.var / "reports"

    @property
    def etc(self) -> Path:
        return self.root / "etc" / "sparkplane"

    @property
    def trust(self) -> Path:
        return self.etc / "trust"

    @property
    def tls(self) -> Path:
        return self.etc / "tls"

    @property
    def engine_env(self) -> Path:
        return self.etc / "engine.env"

    @property
    def engine_args(self) -> Path:
        return self.etc / "engine.args"

    @property
    def controlplane_env(self) -> Path:
        return self.etc / "controlplane.env"

    @property
    def system_key(self) -> Path:
        """The system tenant's API key (0600), written by the installer."""
        return self.etc / "system-tenant.key"

    @property
    def systemd(self) -> Path:
        return self.root / "etc" / "systemd" / "system"

    def active_version(self) -> str | None:
        """The release `current` points at, or None before the first install."""
        if not self.current.is_symlink():
            return None
        return Path(os.readlink(self.current)).name

    def installed_versions(self) -> list[str]:
        """Releases that finished installing (a half-installed one has no `.complete`)."""
        if not self.releases.is_dir():
            return []
        done = [p.name for p in self.releases.iterdir() if (p / ".complete").is_file()]
        return sorted(done, key=lambda name: (self.releases / name / ".complete").stat().st_mtime)


def read_args_file(path: Path) -> list[str]:
    """One engine argument per line; lines starting with '#' are comments."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def engine_command(layout: Layout) -> tuple[list[str], dict[str, str]]:
    """The installed engine's argv and environment, exactly as the systemd unit starts it."""
    python = layout.current / "engine-venv" / "bin" / "python"
    argv = [str(python), "-m", ENGINE_MODULE, *read_args_file(layout.engine_args)]
    return argv, read_env_file(layout.engine_env)


def controlplane_command(layout: Layout) -> list[str]:
    """The installed control plane's argv, exactly as the systemd unit starts it."""
    sparkplane = layout.current / "controlplane-venv" / "bin" / "sparkplane"
    return [str(sparkplane), "serve", "--config", str(layout.controlplane_env)]
