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
    """Run the control plane (uvicorn with httptools and uvloop, plus header and body deadlines
    and a per-address connection bound: controlplane/api/http_server.py)."""
    import uvicorn

    from controlplane.api.http_server import server_config
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
    served = server_config(create_app(settings), settings, ssl_certfile=certfile,
                           ssl_keyfile=keyfile)  # fmt: skip
    uvicorn.Server(served).run()


def register(app: typer.Typer) -> None:
    """Add `serve` to the `sparkplane` app."""
    app.command("serve")(serve)
