"""Documentation is part of the product: a command or setting nobody can read about is a bug."""

from __future__ import annotations

import re
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


def _module_map() -> dict[str, str]:
    """docs/architecture.md's module map: package path -> its row."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text[text.index("## Packages and modules") : text.index("## Life of a request")]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `((?:controlplane|installer)/[\w/.]*)` \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


def _named(row: str) -> set[str]:
    return set(re.findall(r"`([\w.-]+(?:\.py|/))`", row))


def test_the_module_map_lists_every_module_and_no_stale_name() -> None:
    rows = _module_map()
    missing, stale = [], []
    for package in ("controlplane", "installer"):
        for child in sorted((REPO / package).iterdir()):
            if child.name.startswith(("_", ".")) or child.suffix not in {"", ".py"}:
                continue
            key = f"{package}/{child.name}" + ("/" if child.is_dir() else "")
            if key not in rows:
                missing.append(key)
                continue
            if child.is_file():
                continue
            named = _named(rows[key])
            for module in sorted(child.rglob("*.py")):
                parts = module.relative_to(child).parts
                covered = {f"{part}/" for part in parts[:-1]} | {parts[-1]}
                if module.name != "__init__.py" and not covered & named:
                    missing.append(module.relative_to(REPO).as_posix())
            for name in named:
                if name.endswith("/") and not (child / name).is_dir():
                    found = any(p.is_dir() for p in child.rglob(name.rstrip("/")))
                else:
                    found = any(child.rglob(name))
                if not found:
                    stale.append(f"{key}{name}")
    assert missing == [], f"docs/architecture.md's module map misses: {missing}"
    assert stale == [], f"docs/architecture.md's module map names what does not exist: {stale}"


def test_every_path_the_architecture_page_names_exists() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    paths = set(re.findall(r"(?<![\w/])((?:controlplane|installer|tests)/[\w/]*\.py)", text))
    assert [path for path in sorted(paths) if not (REPO / path).exists()] == []
