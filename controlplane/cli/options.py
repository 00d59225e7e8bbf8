"""What every `sparkplane` sub-command shares: the `--config` option and loading the settings.

Typer only: the settings module is imported when a command runs, so that `sparkplane audit
verify` on an auditor's laptop does not load the server's stack to print its help.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from controlplane.core.config import Settings

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="config file (YAML or KEY=VALUE), under SPARKPLANE_* env"),
]


def settings_or_exit(config: Path | None, **overrides: Any) -> Settings:
    """The settings from `config` and the environment; exit status 2 with the reason if bad."""
    from controlplane.core.config import ConfigError, load_settings

    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
