"""`sparkplane keygen`, `sparkplane bundle trusted` and `sparkplane bundle revoke`: the keys
that sign bundles and the appliance's trust in them (`bundle.py` mounts the two sub-commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from controlplane.core import signing
from installer.bundle import trust as trust_mod
from installer.bundle.signature import make_endorsement
from installer.cli.common import console, errors

DEFAULT_TRUST_DIR = trust_mod.appliance_trust_dir(Path("/"))


def register(app: typer.Typer) -> None:
    """Add `keygen` to the `sparkplane` app."""
    app.command("keygen")(keygen)


def keygen(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for bundle.key/bundle.pub")],
    endorse_with: Annotated[
        Path | None, typer.Option(help="Old private key that vouches for the new one (rotation)")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing key pair")] = False,
) -> None:
    """Create an Ed25519 bundle-signing key pair."""
    try:
        old = signing.load_private_key(endorse_with) if endorse_with else None
        key_path, pub_path = signing.generate_keypair(out_dir, overwrite=force)
    except signing.SigningKeyError as exc:
        errors.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    public = signing.load_public_key(pub_path)
    console.print(f"private key  {key_path} (mode 0600, keep it on the staging machine)")
    console.print(f"public key   {pub_path}")
    console.print(f"fingerprint  {signing.fingerprint(public)}")
    if old is not None:
        endorsement = out_dir / "signer.endorsement"
        endorsement.write_bytes(make_endorsement(old, public))
        old_fp = signing.fingerprint(old.public_key())
        console.print(f"endorsement  {endorsement} (by {old_fp}; bundle build ships it)")


def trusted(
    trust_dir: Annotated[Path | None, typer.Option(help="Trust directory")] = None,
    root: Annotated[Path, typer.Option(help="Appliance root")] = Path("/"),
) -> None:
    """List the trusted bundle-signing keys (fingerprints) and the revoked ones."""
    store = trust_mod.TrustStore(trust_dir or trust_mod.appliance_trust_dir(root))
    try:
        revoked = store.revoked_fingerprints()
        keys = store.all_keys()
    except trust_mod.TrustError as exc:
        errors.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    console.print(f"trust directory {store.trust_dir}")
    for key in keys:
        fingerprint = signing.fingerprint(key)
        state = "REVOKED" if fingerprint in revoked else "trusted"
        console.print(f"  {state:<8} {fingerprint}")
    for fingerprint in sorted(revoked - {signing.fingerprint(k) for k in keys}):
        console.print(f"  {'REVOKED':<8} {fingerprint} (no key file)")
    if not keys and not revoked:
        console.print("  (empty: the first install takes --trust KEY)")


def revoke(
    fingerprint: Annotated[str, typer.Argument(help="SHA256:... fingerprint to revoke")],
    trust_dir: Annotated[Path, typer.Option(help="Trust directory")] = DEFAULT_TRUST_DIR,
) -> None:
    """Add a signing key to the trust directory's revocation list."""
    try:
        trust_mod.TrustStore(trust_dir).revoke(fingerprint)
    except trust_mod.TrustError as exc:
        errors.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    console.print(f"revoked {fingerprint} in {trust_dir}")
