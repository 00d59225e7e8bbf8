"""`sparkplane serve`: the control plane under uvicorn, with the same settings as every command."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from controlplane.cli.options import ConfigOption
from controlplane.core.config import ConfigError, load_settings


def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on")] = None,
) -> None:
    """Run the control plane (uvicorn with httptools and uvloop)."""
    import uvicorn

    from controlplane.main import create_app

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    try:
        settings = load_settings(config, **overrides)
        certfile, keyfile = settings.checked_tls_files()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=10,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )


def register(app: typer.Typer) -> None:
    """Add `serve` to the `sparkplane` app."""
    app.command("serve")(serve)
