"""`sparkplane install`: provision ROOT (or every host of an inventory) from a verified bundle.

A thin shell over `installer.provision`, which the tests call directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from controlplane.core import signing
from installer.bundle.trust import TrustError
from installer.cli.common import RootOpt, candidate_keys, console, fail, trust_after_verify
from installer.host.plan import PROFILES, PlanError
from installer.provision.fleet import install_inventory
from installer.provision.install import (
    DEFAULT_CONTROLPLANE_BIND,
    DEFAULT_CONTROLPLANE_PORT,
    DEFAULT_ENGINE_PORT,
    InstallError,
    install,
)

BundleArg = Annotated[Path, typer.Argument(help="Bundle directory (unpacked).")]
TrustOpt = Annotated[
    Path | None,
    typer.Option("--trust", help="Bundle-signing public key (PEM file or directory of *.pub)."),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
ProfileOpt = Annotated[
    str, typer.Option("--profile", help=f"Engine profile: {', '.join(PROFILES)}.")
]


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
    site_vars: Annotated[
        Path | None,
        typer.Option(
            "--vars",
            help="YAML file of this host's inventory variables (audit mode, firewall, "
            "container engine...); kept by upgrade.",
        ),
    ] = None,
) -> None:
    """Verify BUNDLE, then provision ROOT from it with ansible-runner (idempotent)."""
    if inventory is not None:
        install_fleet(bundle, inventory, root, trust, yes, profile)
        return
    try:
        keys = candidate_keys(root, trust)
        site = read_site_vars(site_vars) if site_vars is not None else None
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
            site_vars=site,
        )
    except InstallError as exc:
        fail(str(exc), exc.details, exc.artifacts)
    except (TrustError, PlanError, signing.SigningKeyError) as exc:
        fail(str(exc))
    console.print(
        f"[green]installed[/] {result.version} at {result.release_dir}: changed={result.changed}; "
        f"engine 127.0.0.1:{result.engine_port} serves '{result.served_model_name}'"
    )


def read_site_vars(path: Path) -> dict[str, Any]:
    """A `--vars` file: one YAML (or JSON) mapping of inventory variables."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InstallError(f"cannot read --vars {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise InstallError(f"--vars {path} must hold a mapping of inventory variables")
    return {str(name): value for name, value in loaded.items()}


def install_fleet(
    bundle: Path, inventory: Path, root: Path, trust: Path | None, yes: bool, profile: str
) -> None:
    """Several hosts in one run; ROOT only holds the control node's trust keys and artifacts."""
    try:
        result = install_inventory(
            bundle,
            inventory,
            root,
            candidate_keys(root, trust),
            profile,
            console=console,
            after_verify=trust_after_verify(root, trust, yes),
        )
    except InstallError as exc:
        fail(str(exc), exc.details, exc.artifacts)
    except (TrustError, signing.SigningKeyError) as exc:
        fail(str(exc))
    for name, changed in sorted(result.changed_by_host.items()):
        console.print(f"[green]installed[/] {result.version} on {name}: changed={changed}")


def register(app: typer.Typer) -> None:
    """Add `install` to the `sparkplane` app."""
    app.command("install")(install_command)
