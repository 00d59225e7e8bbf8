"""`sparkplane support-bundle` and `sparkplane tls init|import`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from controlplane.appliance.layout import Layout
from installer.cli.common import RootOpt, console
from installer.ops.support import build_support_bundle
from installer.ops.tls import TlsError, import_certificate, issue_server_certificate

tls_app = typer.Typer(help="TLS certificate of the control plane.", no_args_is_help=True)


def support_bundle_command(
    out: Annotated[Path, typer.Option("--out", help="Output FILE.tar.gz.")],
    root: RootOpt = Path("/"),
) -> None:
    """Preflight, versions, config, unit status, logs and ansible artifacts, secrets redacted."""
    skipped = build_support_bundle(root, out)
    console.print(
        f"wrote {out} ({out.stat().st_size} bytes); left out {len(skipped)} file(s) "
        "that are secret by nature or too large (listed in left-out.json)"
    )


@tls_app.command("init")
def tls_init_command(
    san: Annotated[list[str], typer.Option("--san", help="DNS name or IP (repeat).")],
    root: RootOpt = Path("/"),
) -> None:
    """Create a local CA (once) and issue the control plane's server certificate."""
    tls_dir = Layout.at(root).tls
    try:
        cert = issue_server_certificate(tls_dir, san)
    except TlsError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    console.print(
        f"issued {tls_dir / 'server.crt'} for {', '.join(san)} "
        f"(valid to {cert.not_valid_after_utc:%Y-%m-%d}); clients trust {tls_dir / 'ca.crt'}"
    )


@tls_app.command("import")
def tls_import_command(
    cert: Annotated[Path, typer.Option(help="The site's certificate (PEM).")],
    key: Annotated[Path, typer.Option(help="Its private key (PEM, unencrypted).")],
    root: RootOpt = Path("/"),
) -> None:
    """Use the site's own certificate and key instead of the local CA."""
    try:
        imported = import_certificate(Layout.at(root).tls, cert, key)
    except TlsError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"imported {imported.subject.rfc4514_string()}")


def register(app: typer.Typer) -> None:
    app.command("support-bundle")(support_bundle_command)
    app.add_typer(tls_app, name="tls")
