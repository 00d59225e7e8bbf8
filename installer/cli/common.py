"""What every installer command shares: consoles, `--root`, error exit, trust-key handling."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console

from controlplane.appliance.layout import Layout
from controlplane.core import signing
from installer.bundle.manifest import Manifest
from installer.bundle.trust import TrustError, TrustStore, load_key_source, resolve_trust

console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)
RootOpt = Annotated[Path, typer.Option("--root", help="Appliance root; '/' on a real box.")]


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
