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

# Top-level command -> the module whose `register(app)` adds it. Modules register in the order
# of their first command here, which is the order `sparkplane --help` lists commands in.
REGISTRARS: dict[str, str] = {
    "keygen": "installer.cli.trust",
    "bundle": "installer.cli.bundle",
    "install": "installer.cli.provision",
    "preflight": "installer.cli.host",
    "plan": "installer.cli.host",
    "upgrade": "installer.cli.lifecycle",
    "rollback": "installer.cli.lifecycle",
    "uninstall": "installer.cli.lifecycle",
    "status": "installer.cli.lifecycle",
    "validate": "installer.cli.validate",
    "support-bundle": "installer.cli.ops",
    "tls": "installer.cli.ops",
    "demo": "installer.cli.demo",
    "serve": "controlplane.cli.serve",
    "tenants": "controlplane.cli.tenants",
    "keys": "controlplane.cli.tenants",
    "audit": "controlplane.cli.audit",
    "admins": "controlplane.cli.admins",
    "admin-token": "controlplane.cli.admin_tokens",
    "usage": "controlplane.cli.usage",
    "capacity": "controlplane.cli.capacity",
    "backup": "controlplane.cli.backup",
    "restore": "controlplane.cli.backup",
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
    """`from installer.cli.main import app`: the complete app (tests, docs checks)."""
    if name == "app":
        return build_app()
    raise AttributeError(name)


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    module = REGISTRARS.get(command)
    build_app([module] if module else None)()
