"""`sparkplane keygen` and the `sparkplane bundle` sub-app (build, verify, pack, unpack, revoke)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from controlplane.core import signing
from installer.bundle import trust as trust_mod
from installer.bundle.appliance import model_trust_of
from installer.bundle.build import BuildError, build_bundle
from installer.bundle.components import ComponentError
from installer.bundle.modelsig import ModelSignatureError, ModelTrust
from installer.bundle.progress import byte_progress
from installer.bundle.report import VerifyReport
from installer.bundle.signature import make_endorsement
from installer.bundle.spec import SpecError
from installer.bundle.verify import verify_bundle
from installer.bundle.wheelhouse import WheelhouseError
from installer.cli import pack

DEFAULT_TRUST_DIR = trust_mod.appliance_trust_dir(Path("/"))
bundle_app = typer.Typer(
    help="Build, verify and move signed offline bundles.", no_args_is_help=True
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `sparkplane` app."""
    app.command("keygen")(keygen)
    app.add_typer(bundle_app, name="bundle")
    pack.register(bundle_app)


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
        err.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    public = signing.load_public_key(pub_path)
    out.print(f"private key  {key_path} (mode 0600, keep it on the staging machine)")
    out.print(f"public key   {pub_path}")
    out.print(f"fingerprint  {signing.fingerprint(public)}")
    if old is not None:
        endorsement = out_dir / "signer.endorsement"
        endorsement.write_bytes(make_endorsement(old, public))
        old_fp = signing.fingerprint(old.public_key())
        out.print(f"endorsement  {endorsement} (by {old_fp}; bundle build ships it)")


@bundle_app.command("build")
def build(
    spec: Annotated[Path, typer.Argument(help="Bundle spec YAML (see offline-bundle/README.md)")],
    key: Annotated[Path, typer.Option(help="Ed25519 private key (bundle.key)")],
    out_dir: Annotated[Path, typer.Option("--out", help="Bundle directory to create")],
    var: Annotated[list[str], typer.Option(help="NAME=VALUE for ${NAME} in the spec")] = [],  # noqa: B006
    endorsement: Annotated[Path | None, typer.Option(help="signer.endorsement to ship")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing bundle directory")] = False,
) -> None:
    """Build and sign a bundle from a spec (on the connected staging machine)."""
    variables = {}
    for item in var:
        name, sep, value = item.partition("=")
        if not sep or not name:
            err.print(f"error: --var expects NAME=VALUE, got {item!r}")
            raise typer.Exit(2)
        variables[name] = value
    try:
        with byte_progress(err, "build", enabled=sys.stderr.isatty()) as sink:
            result = build_bundle(
                spec, key, out_dir, variables=variables, endorsement=endorsement, force=force,
                log=lambda message: err.print(f"[dim]{message}[/dim]"), progress=sink,
            )  # fmt: skip
    except (SpecError, signing.SigningKeyError) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    except (BuildError, ComponentError, WheelhouseError) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(1) from exc
    manifest = result.manifest
    size_mb = manifest.total_bytes() / 1e6
    out.print(f"built {manifest.name} {manifest.version} at {result.path}")
    out.print(f"  {len(manifest.files)} files, {size_mb:.1f} MB, {len(manifest.packages)} wheels")
    out.print(f"  {result.elapsed:.1f} s")


@bundle_app.command("verify")
def verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory")],
    trust: Annotated[
        Path | None,
        typer.Option(
            help="Trusted key file, or a trust directory [default: /etc/sparkplane/trust]"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable result")] = False,
    root: Annotated[Path, typer.Option(help="Appliance root whose trust directory to use")] = Path(
        "/"
    ),
    workers: Annotated[int | None, typer.Option(min=1, help="Hashing threads")] = None,
    model_trust: Annotated[
        list[Path], typer.Option(help="OpenSSF model-signing public key or CA certificate (PEM)")
    ] = [],  # noqa: B006
) -> None:
    """Check a bundle's signature and every file. Exit 0 valid, 1 invalid, 2 usage error."""
    if not bundle.is_dir():
        err.print(f"error: {bundle} is not a bundle directory")
        raise typer.Exit(2)
    if (bundle / "index.json").is_file() and not (bundle / "manifest.json").exists():
        err.print(f"error: {bundle} holds packed parts; run `sparkplane bundle unpack` first")
        raise typer.Exit(2)
    try:
        source = trust or trust_mod.appliance_trust_dir(root)
        keys, revoked = trust_mod.load_trust_source(source)
        models = ModelTrust.from_paths(list(model_trust))
        if source.is_dir():  # a trust directory may also hold model-signing keys and CAs
            from_dir = model_trust_of(source)
            models = ModelTrust(models.keys + from_dir.keys, models.roots + from_dir.roots)
    except (trust_mod.TrustError, signing.SigningKeyError, ModelSignatureError, ValueError) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    show_bar = not as_json and sys.stderr.isatty()
    with byte_progress(err, "verifying", enabled=show_bar) as sink:
        report = verify_bundle(
            bundle, keys, revoked=revoked, workers=workers, progress=sink, model_trust=models
        )
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        print_report(report)
    raise typer.Exit(0 if report.ok else 1)


def print_report(report: VerifyReport) -> None:
    data = report.as_dict()
    title = f"{data['name'] or '?'} {data['version'] or ''}".strip()
    verdict = "[green]VALID[/green]" if report.ok else "[red]INVALID[/red]"
    out.print(f"bundle      {title}  {verdict}")
    if data["platform"]:
        out.print("platform    " + " ".join(f"{k}={v}" for k, v in data["platform"].items()))
    for component in data["components"]:
        size = f"{component['files']:>5} files {component['bytes'] / 1e6:>9,.1f} MB"
        name, role = component["name"], component["role"]
        out.print(f"component   {name:<24} {role:<12} {size}  {component['path']}")
    out.print(f"files       {data['files']} files, {data['bytes'] / 1e6:,.1f} MB")
    signer = data["signer"] or "none"
    if data["endorsed_by"]:
        signer += f" (new key, endorsed by trusted {data['endorsed_by']})"
    out.print(f"signer      {signer}")
    for entry in data["model_signatures"]:
        line = f"{entry['component']}: {entry['status']} ({entry['detail']})"
        out.print(f"model sig   {line}", markup=False)
    out.print(f"checked     {data['elapsed_s']:.2f} s, {data['mb_per_s']:,.0f} MB/s")
    if report.findings:
        out.print(f"[red]{len(report.findings)} problem(s):[/red]")
        for finding in report.sorted_findings():
            out.print(f"  {finding.problem:<18} {finding.path}  {finding.detail}", markup=False)


@bundle_app.command("trusted")
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
        err.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    out.print(f"trust directory {store.trust_dir}")
    for key in keys:
        fingerprint = signing.fingerprint(key)
        state = "REVOKED" if fingerprint in revoked else "trusted"
        out.print(f"  {state:<8} {fingerprint}")
    for fingerprint in sorted(revoked - {signing.fingerprint(k) for k in keys}):
        out.print(f"  {'REVOKED':<8} {fingerprint} (no key file)")
    if not keys and not revoked:
        out.print("  (empty: the first install takes --trust KEY)")


@bundle_app.command("revoke")
def revoke(
    fingerprint: Annotated[str, typer.Argument(help="SHA256:... fingerprint to revoke")],
    trust_dir: Annotated[Path, typer.Option(help="Trust directory")] = DEFAULT_TRUST_DIR,
) -> None:
    """Add a signing key to the trust directory's revocation list."""
    try:
        trust_mod.TrustStore(trust_dir).revoke(fingerprint)
    except trust_mod.TrustError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    out.print(f"revoked {fingerprint} in {trust_dir}")
