"""`sparkplane bundle pack` and `sparkplane bundle unpack`: moving a bundle on removable media."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from controlplane.core import signing
from installer.bundle.manifest import SIGNER_NAME
from installer.bundle.pack import PackError, pack_bundle, parse_size
from installer.bundle.progress import byte_progress
from installer.bundle.trust import TrustError, appliance_trust_dir, load_trust_source
from installer.bundle.unpack import PartsError, unpack
from installer.bundle.verify import verify_bundle

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def register(bundle_app: typer.Typer) -> None:
    bundle_app.command("pack")(pack)
    bundle_app.command("unpack")(unpack_command)


def pack(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory to pack")],
    split: Annotated[str, typer.Option(help="Largest part size, e.g. 4G (FAT32) or 25G (BD-R)")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the parts and index")],
    key: Annotated[Path, typer.Option(help="The bundle's signing key, to sign the part index")],
) -> None:
    """Split a verified bundle into tar parts plus a signed index of their hashes."""
    try:
        limit = parse_size(split)
        private = signing.load_private_key(key)
        signer = signing.load_public_key(bundle / SIGNER_NAME)
    except (PackError, signing.SigningKeyError) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    if not signing.same_key(private.public_key(), signer):
        err.print(f"error: {key} did not sign {bundle}; pack with the bundle's own key")
        raise typer.Exit(2)
    report = verify_bundle(bundle, [signer])
    if not report.ok:
        err.print(f"error: {bundle} does not verify; refusing to pack it:")
        for finding in report.sorted_findings():
            err.print(f"  {finding.problem:<18} {finding.path}  {finding.detail}", markup=False)
        raise typer.Exit(1)
    if out_dir.exists() and any(out_dir.iterdir()):
        err.print(f"error: {out_dir} is not empty")
        raise typer.Exit(2)
    index = pack_bundle(bundle, out_dir, limit, private)
    out.print(f"packed {bundle} into {len(index['parts'])} part(s) of at most {split} in {out_dir}")
    for part in index["parts"]:
        out.print(f"  {part['file']}  {part['size'] / 1e6:,.1f} MB  sha256 {part['sha256'][:16]}…")


def unpack_command(
    parts_dir: Annotated[Path, typer.Argument(help="Directory holding the parts and index.json")],
    out_dir: Annotated[Path, typer.Option("--out", help="Bundle directory to create")],
    trust: Annotated[
        Path | None,
        typer.Option(
            help="Trusted key file or trust directory [default: ROOT/etc/sparkplane/trust]"
        ),
    ] = None,
    root: Annotated[Path, typer.Option(help="Appliance root whose trust directory to use")] = Path(
        "/"
    ),
) -> None:
    """Check every part against the signed index, then unpack; re-run to resume."""
    try:
        keys, revoked = load_trust_source(trust or appliance_trust_dir(root))
    except TrustError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    show_bar = sys.stderr.isatty()
    try:
        with byte_progress(err, "checking", enabled=show_bar) as sink:
            report = unpack(
                parts_dir, out_dir, keys, revoked, progress=lambda: sink,
                log=lambda message: err.print(f"[dim]{message}[/dim]"),
            )  # fmt: skip
    except PartsError as exc:
        err.print(
            f"error: {len(exc.problems)} part(s) cannot be used; nothing was unpacked from them:"
        )
        for name, problem, detail in exc.problems:
            err.print(f"  {problem:<12} {name}  {detail}", markup=False)
        raise typer.Exit(1) from exc
    except PackError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(1) from exc
    if not report.ok:
        err.print(f"error: the unpacked bundle in {out_dir} does not verify:")
        for finding in report.sorted_findings():
            err.print(f"  {finding.problem:<18} {finding.path}  {finding.detail}", markup=False)
        raise typer.Exit(1)
    manifest = report.manifest
    assert manifest is not None
    out.print(f"unpacked and verified {manifest.name} {manifest.version} into {out_dir}")
