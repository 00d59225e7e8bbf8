"""Documentation is part of the product: a command or setting nobody can read about is a bug."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
import yaml

from controlplane.core.config import Settings
from installer.cli.main import app

REPO = Path(__file__).resolve().parents[1]


def documentation() -> str:
    pages = [REPO / "README.md", REPO / "offline-bundle" / "README.md"]
    pages += sorted((REPO / "docs").glob("*.md"))
    return "\n".join(page.read_text() for page in pages)


def commands(command: Any, prefix: str = "sparkplane") -> Iterator[tuple[str, Any]]:
    """Every (path, command) below `command`. Typer bundles its own click, so a group is
    recognised by its sub-commands, not by `isinstance(command, click.Group)`."""
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        yield prefix, command
        return
    for name, sub in sorted(subcommands.items()):
        if not sub.hidden:
            yield from commands(sub, f"{prefix} {name}")


def option_names(command: Any) -> list[str]:
    """The long option names of a command. A switch's `--no-flag` counts only when it is a
    real third choice (default None: "as before"); otherwise it just restates the default."""
    names = []
    for param in command.params:
        if param.param_type_name != "option" or param.hidden:
            continue
        names += [opt for opt in param.opts if opt.startswith("--")]
        if param.default is None:
            names += [opt for opt in param.secondary_opts if opt.startswith("--")]
    return [name for name in names if name != "--help"]


def test_the_walk_reaches_every_command() -> None:
    paths = [path for path, _ in commands(typer.main.get_command(app))]
    assert len(paths) >= 39 and "sparkplane audit checkpoint" in paths, paths
    assert "--health-timeout" in option_names(
        dict(commands(typer.main.get_command(app)))["sparkplane upgrade"]
    )


def test_every_command_is_documented() -> None:
    docs = documentation()
    found = list(commands(typer.main.get_command(app)))
    missing = [path for path, _ in found if path not in docs]
    assert missing == [], f"commands missing from README.md, offline-bundle and docs: {missing}"
    undocumented = [
        f"{path} {option}"
        for path, command in found
        for option in option_names(command)
        if option not in docs
    ]
    assert undocumented == [], f"options missing from the docs: {undocumented}"


def test_every_setting_is_documented() -> None:
    docs = documentation()
    missing = [
        f"SPARKPLANE_{name.upper()}"
        for name in Settings.model_fields
        if f"SPARKPLANE_{name.upper()}" not in docs
    ]
    assert missing == [], f"settings missing from README.md and docs/*.md: {missing}"


def test_every_inventory_variable_is_documented() -> None:
    docs = documentation()
    group_vars = yaml.safe_load((REPO / "playbooks" / "group_vars" / "all.yml").read_text())
    missing = [name for name in group_vars if f"`{name}`" not in docs]
    assert missing == [], f"inventory variables missing from docs/installer.md: {missing}"
