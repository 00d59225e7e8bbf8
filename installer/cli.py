"""The one `sparkplane` command: every package mounts its sub-commands here."""

import typer

from controlplane import cli as controlplane_cli
from controlplane.audit import cli as audit_cli
from controlplane.console import cli as console_cli
from installer import commands as installer_commands
from installer import demo
from installer.bundle import cli as bundle_cli

app = typer.Typer(
    name="sparkplane",
    help="Offline installer and control plane for a private LLM service on DGX Spark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

bundle_cli.register(app)
installer_commands.register(app)
demo.register(app)
controlplane_cli.register(app)
audit_cli.register(app)
console_cli.register(app)


def main() -> None:
    app()
