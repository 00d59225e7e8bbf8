"""`sparkplane demo`: a whole appliance on this machine, in the foreground (ops/demo.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from installer.ops.demo import DEMO_SPEC, DemoError, console, run_demo
from installer.provision.install import InstallError


def demo(
    root: Annotated[Path, typer.Option(help="Appliance root (created)")] = Path("demo-root"),
    port: Annotated[int, typer.Option(help="Control plane port")] = 8080,
    host: Annotated[str, typer.Option(help="Control plane address")] = "127.0.0.1",
    spec: Annotated[Path, typer.Option(help="Bundle spec")] = DEMO_SPEC,
    bundle: Annotated[
        Path | None, typer.Option(help="Use this bundle instead of building one")
    ] = None,
) -> None:
    """Build, verify and install the demo bundle, then run engine + control plane."""
    try:
        run_demo(root, host, port, spec, bundle)
    except (DemoError, InstallError) as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        raise typer.Exit(1) from exc


def register(app: typer.Typer) -> None:
    """Add `demo` to the `sparkplane` app."""
    app.command("demo")(demo)
