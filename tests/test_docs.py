"""Documentation is part of the product: a command or setting nobody can read about is a bug."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import typer

from controlplane.core.config import Settings
from installer.cli.main import app

REPO = Path(__file__).resolve().parents[1]


def documentation() -> str:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return "\n".join(page.read_text() for page in pages)


def command_paths(command: click.Command, prefix: str = "sparkplane") -> Iterator[str]:
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            if not sub.hidden:
                yield from command_paths(sub, f"{prefix} {name}")
    else:
        yield prefix


def test_every_command_is_documented() -> None:
    docs = documentation()
    missing = [path for path in command_paths(typer.main.get_command(app)) if path not in docs]
    assert missing == [], f"commands missing from README.md and docs/*.md: {missing}"


def test_every_setting_is_documented() -> None:
    docs = documentation()
    missing = [
        f"SPARKPLANE_{name.upper()}"
        for name in Settings.model_fields
        if f"SPARKPLANE_{name.upper()}" not in docs
    ]
    assert missing == [], f"settings missing from README.md and docs/*.md: {missing}"
