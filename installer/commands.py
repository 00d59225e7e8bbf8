"""Command-line sub-commands; `register` mounts them on the one `sparkplane` app."""

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `sparkplane` app."""
