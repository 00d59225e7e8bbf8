"""The one `sparkplane` command: every package mounts its sub-commands here.

Importing every package (the control plane pulls in SQLAlchemy, FastAPI and the ORM models)
takes about 1.5 s, so `main()` imports only the package that defines the command being run;
`--help`, completion and unknown commands get the whole tree.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import typer

# Top-level command -> the module whose `register(app)` adds it.
REGISTRARS: dict[str, str] = {
    "bundle": "installer.bundle.cli",
    "keygen": "installer.bundle.cli",
    "install": "installer.commands",
    "plan": "installer.commands",
    "preflight": "installer.commands",
    "upgrade": "installer.commands",
    "rollback": "installer.commands",
    "uninstall": "installer.commands",
    "status": "installer.commands",
    "support-bundle": "installer.commands",
    "tls": "installer.commands",
    "demo": "installer.demo",
    "serve": "controlplane.cli",
    "tenants": "controlplane.cli",
    "keys": "controlplane.cli",
    "audit": "controlplane.audit.cli",
    "admins": "controlplane.console.cli",
}


def build_app(modules: Sequence[str] | None = None) -> typer.Typer:
    """The `sparkplane` app with the commands of `modules` (default: all of them)."""
    app = typer.Typer(
        name="sparkplane",
        help="Offline installer and control plane for a private LLM service on DGX Spark.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    # A callback keeps `sparkplane CMD` a group even when only one command is registered.
    app.callback()(_group)
    for module in modules if modules is not None else dict.fromkeys(REGISTRARS.values()):
        importlib.import_module(module).register(app)
    return app


def _group() -> None:
    pass


def __getattr__(name: str) -> typer.Typer:
    """`from installer.cli import app`: the complete app (tests, docs checks)."""
    if name == "app":
        return build_app()
    raise AttributeError(name)


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    module = REGISTRARS.get(command)
    build_app([module] if module else None)()
