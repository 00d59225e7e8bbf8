"""KEY=VALUE files: the appliance's engine.env and controlplane.env, and `--config` files.

systemd reads the appliance's as `EnvironmentFile=`, podman/docker read engine.env with
`--env-file`, and the control plane and the installer read them here, with python-dotenv's
parser and no variable expansion (systemd expands nothing in these files either). They all
read a plain value as it is written: no blank around it, no quote first, no backslash, no `#`
after a blank (python-dotenv: a comment), one line. The installer's templates (templates/_env.j2)
write any other value double-quoted with `\\` and `"` escaped, which systemd and python-dotenv
both read back exactly; engine.env refuses such a value, since podman and docker would keep the
quotes. Comments are lines starting with `#`.
"""

from __future__ import annotations

import io
from pathlib import Path

from dotenv.parser import parse_stream


def read_env_file(path: Path) -> dict[str, str]:
    """The KEY=VALUE lines of the file (see `parse_env`)."""
    return parse_env(path.read_text(encoding="utf-8"), path)


def parse_env(text: str, source: str | Path) -> dict[str, str]:
    """KEY=VALUE lines (blank lines and `#` comments skipped); any other line is an error."""
    env: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        key, value = binding.key, binding.value
        if binding.error or (key is not None and value is None):
            line = binding.original.string.strip()
            raise ValueError(f"{source}:{binding.original.line}: expected KEY=VALUE, got {line!r}")
        if key is not None and value is not None:  # else a blank line or a comment
            env[key] = value
    return env
