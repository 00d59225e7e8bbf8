"""Command-line sub-commands; `register` mounts them on the one `sparkplane` app.

install / upgrade / rollback / uninstall / status / preflight / plan / support-bundle. Each
command is a thin shell over a function of the installer package that tests call directly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console

from installer import host_commands, lifecycle_commands, ops_commands, signing
from installer.bundle.manifest import Manifest
from installer.bundle.trust import TrustError, TrustStore, load_key_source, resolve_trust
from installer.fleet import install_inventory
from installer.install import (
    DEFAULT_CONTROLPLANE_BIND,
    DEFAULT_CONTROLPLANE_PORT,
    DEFAULT_ENGINE_PORT,
    InstallError,
    install,
)
from installer.layout import Layout
from installer.plan import PROFILES, PlanError

console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)

BundleArg = Annotated[Path, typer.Argument(help="Bundle directory (unpacked).")]
RootOpt = Annotated[Path, typer.Option("--root", help="Appliance root; '/' on a real box.")]
TrustOpt = Annotated[
    Path | None,
    typer.Option("--trust", help="Bundle-signing public key (PEM file or directory of *.pub)."),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
ProfileOpt = Annotated[
    str, typer.Option("--profile", help=f"Engine profile: {', '.join(PROFILES)}.")
]


def fail(message: str, details: list[str] | None = None, artifacts: Path | None = None) -> None:
    """Print an error with every detail line, then exit 1."""
    errors.print(f"[red]error:[/] {message}")
    for line in details or []:
        errors.print(f"  - {line}")
    if artifacts is not None:
        errors.print(f"  ansible artifacts: {artifacts}")
    raise typer.Exit(1)


def candidate_keys(root: Path, trust: Path | None) -> list[Ed25519PublicKey]:
    """Keys to verify with: the trust directory's plus --trust's, without storing anything."""
    store = TrustStore(Layout.at(root).trust)
    keys = store.keys()
    if trust is not None:
        revoked = store.revoked_fingerprints()
        keys += [k for k in load_key_source(trust) if signing.fingerprint(k) not in revoked]
    if not keys:
        raise TrustError(f"no trusted bundle-signing key under {store.trust_dir}; give --trust")
    return keys


def trust_after_verify(root: Path, trust: Path | None, yes: bool) -> Callable[[Manifest], None]:
    """Store a --trust key only once the bundle it signed has verified (and it is confirmed)."""

    def store(_: Manifest) -> None:
        resolve_trust(Layout.at(root).trust, trust, yes, typer.confirm, notify=console.print)

    return store


def install_command(
    bundle: BundleArg,
    root: RootOpt = Path("/"),
    trust: TrustOpt = None,
    yes: YesOpt = False,
    profile: ProfileOpt = "demo",
    engine_port: Annotated[int, typer.Option(help="Engine port (loopback).")] = DEFAULT_ENGINE_PORT,
    port: Annotated[int, typer.Option(help="Control-plane port.")] = DEFAULT_CONTROLPLANE_PORT,
    bind: Annotated[str, typer.Option(help="Control-plane address.")] = DEFAULT_CONTROLPLANE_BIND,
    systemd: Annotated[
        bool, typer.Option(help="With --root /: create the user, enable units, load nftables.")
    ] = False,
    inventory: Annotated[
        Path | None,
        typer.Option(help="Ansible inventory: provision every host of group 'sparkplane'."),
    ] = None,
) -> None:
    """Verify BUNDLE, then provision ROOT from it with ansible-runner (idempotent)."""
    if inventory is not None:
        install_fleet(bundle, inventory, root, trust, profile)
        return
    try:
        keys = candidate_keys(root, trust)
        result = install(
            bundle,
            root,
            keys,
            profile,
            engine_port=engine_port,
            controlplane_port=port,
            controlplane_bind=bind,
            allow_system_changes=systemd,
            console=console,
            after_verify=trust_after_verify(root, trust, yes),
        )
    except InstallError as exc:
        fail(str(exc), exc.details, exc.artifacts)
    except (TrustError, PlanError, signing.SigningKeyError) as exc:
        fail(str(exc))
    console.print(
        f"[green]installed[/] {result.version} at {result.release_dir}: changed={result.changed}; "
        f"engine 127.0.0.1:{result.engine_port} serves '{result.served_model_name}'"
    )


def install_fleet(
    bundle: Path, inventory: Path, root: Path, trust: Path | None, profile: str
) -> None:
    """Several hosts in one run; ROOT only holds the control node's trust keys and artifacts."""
    try:
        result = install_inventory(
            bundle, inventory, root, candidate_keys(root, trust), profile, console=console
        )
    except InstallError as exc:
        fail(str(exc), exc.details, exc.artifacts)
    except (TrustError, signing.SigningKeyError) as exc:
        fail(str(exc))
    for host, changed in sorted(result.changed_by_host.items()):
        console.print(f"[green]installed[/] {result.version} on {host}: changed={changed}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `sparkplane` app."""
    app.command("install")(install_command)
    host_commands.register(app)
    lifecycle_commands.register(app)
    ops_commands.register(app)
