"""The `sparkplane bundle` sub-app: build and verify a signed bundle, pack it into parts for
removable media and unpack it on the box; `trusted` and `revoke` come from `trust.py`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from controlplane.core import signing
from installer.bundle import trust as trust_mod
from installer.bundle.appliance import model_trust_of
from installer.bundle.build import BuildError, build_bundle
from installer.bundle.components import ComponentError
from installer.bundle.manifest import SIGNER_NAME
from installer.bundle.modelsig import ModelSignatureError, ModelTrust
from installer.bundle.pack import PackError, pack_bundle, parse_size
from installer.bundle.progress import byte_progress
from installer.bundle.report import VerifyReport
from installer.bundle.spec import SpecError
from installer.bundle.unpack import PartsError, unpack
from installer.bundle.verify import verify_bundle
from installer.bundle.wheelhouse import WheelhouseError
from installer.cli import trust
from installer.cli.common import console, errors

bundle_app = typer.Typer(
    help="Build, verify and move signed offline bundles.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the `bundle` sub-app to the `sparkplane` app."""
    app.add_typer(bundle_app, name="bundle")


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
            errors.print(f"error: --var expects NAME=VALUE, got {item!r}")
            raise typer.Exit(2)
        variables[name] = value
    try:
        with byte_progress(errors, "build", enabled=sys.stderr.isatty()) as sink:
            result = build_bundle(
                spec, key, out_dir, variables=variables, endorsement=endorsement, force=force,
                log=lambda message: errors.print(f"[dim]{message}[/dim]"), progress=sink,
            )  # fmt: skip
    except (SpecError, signing.SigningKeyError) as exc:
        errors.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    except (BuildError, ComponentError, WheelhouseError) as exc:
        errors.print(f"error: {exc}")
        raise typer.Exit(1) from exc
    manifest = result.manifest
    size_mb = manifest.total_bytes() / 1e6
    console.print(f"built {manifest.name} {manifest.version} at {result.path}")
    console.print(
        f"  {len(manifest.files)} files, {size_mb:.1f} MB, {len(manifest.packages)} wheels"
    )
    console.print(f"  {result.elapsed:.1f} s")


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
        errors.print(f"error: {bundle} is not a bundle directory")
        raise typer.Exit(2)
    if (bundle / "index.json").is_file() and not (bundle / "manifest.json").exists():
        errors.print(f"error: {bundle} holds packed parts; run `sparkplane bundle unpack` first")
        raise typer.Exit(2)
    try:
        source = trust or trust_mod.appliance_trust_dir(root)
        keys, revoked = trust_mod.load_trust_source(source)
        models = ModelTrust.from_paths(list(model_trust))
        if source.is_dir():  # a trust directory may also hold model-signing keys and CAs
            from_dir = model_trust_of(source)
            models = ModelTrust(models.keys + from_dir.keys, models.roots + from_dir.roots)
    except (trust_mod.TrustError, signing.SigningKeyError, ModelSignatureError, ValueError) as exc:
        errors.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    show_bar = not as_json and sys.stderr.isatty()
    with byte_progress(errors, "verifying", enabled=show_bar) as sink:
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
    console.print(f"bundle      {title}  {verdict}")
    if data["platform"]:
        console.print("platform    " + " ".join(f"{k}={v}" for k, v in data["platform"].items()))
    for component in data["components"]:
        size = f"{component['files']:>5} files {component['bytes'] / 1e6:>9,.1f} MB"
        name, role = component["name"], component["role"]
        console.print(f"component   {name:<24} {role:<12} {size}  {component['path']}")
    console.print(f"files       {data['files']} files, {data['bytes'] / 1e6:,.1f} MB")
    signer = data["signer"] or "none"
    if data["endorsed_by"]:
        signer += f" (new key, endorsed by trusted {data['endorsed_by']})"
    console.print(f"signer      {signer}")
    for entry in data["model_signatures"]:
        line = f"{entry['component']}: {entry['status']} ({entry['detail']})"
        console.print(f"model sig   {line}", markup=False)
    console.print(f"checked     {data['elapsed_s']:.2f} s, {data['mb_per_s']:,.0f} MB/s")
    if report.findings:
        console.print(f"[red]{len(report.findings)} problem(s):[/red]")
        for finding in report.sorted_findings():
            console.print(f"  {finding.problem:<18} {finding.path}  {finding.detail}", markup=False)


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
        errors.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    if not signing.same_key(private.public_key(), signer):
        errors.print(f"error: {key} did not sign {bundle}; pack with the bundle's own key")
        raise typer.Exit(2)
    report = verify_bundle(bundle, [signer])
    if not report.ok:
        errors.print(f"error: {bundle} does not verify; refusing to pack it:")
        for finding in report.sorted_findings():
            errors.print(f"  {finding.problem:<18} {finding.path}  {finding.detail}", markup=False)
        raise typer.Exit(1)
    if out_dir.exists() and any(out_dir.iterdir()):
        errors.print(f"error: {out_dir} is not empty")
        raise typer.Exit(2)
    index = pack_bundle(bundle, out_dir, limit, private)
    console.print(
        f"packed {bundle} into {len(index['parts'])} part(s) of at most {split} in {out_dir}"
    )
    for part in index["parts"]:
        console.print(
            f"  {part['file']}  {part['size'] / 1e6:,.1f} MB  sha256 {part['sha256'][:16]}…"
        )


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
        keys, revoked = trust_mod.load_trust_source(trust or trust_mod.appliance_trust_dir(root))
    except trust_mod.TrustError as exc:
        errors.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    show_bar = sys.stderr.isatty()
    try:
        with byte_progress(errors, "checking", enabled=show_bar) as sink:
            report = unpack(
                parts_dir, out_dir, keys, revoked, progress=lambda: sink,
                log=lambda message: errors.print(f"[dim]{message}[/dim]"),
            )  # fmt: skip
    except PartsError as exc:
        errors.print(
            f"error: {len(exc.problems)} part(s) cannot be used; nothing was unpacked from them:"
        )
        for name, problem, detail in exc.problems:
            errors.print(f"  {problem:<12} {name}  {detail}", markup=False)
        raise typer.Exit(1) from exc
    except PackError as exc:
        errors.print(f"error: {exc}")
        raise typer.Exit(1) from exc
    if not report.ok:
        errors.print(f"error: the unpacked bundle in {out_dir} does not verify:")
        for finding in report.sorted_findings():
            errors.print(f"  {finding.problem:<18} {finding.path}  {finding.detail}", markup=False)
        raise typer.Exit(1)
    manifest = report.manifest
    assert manifest is not None
    console.print(f"unpacked and verified {manifest.name} {manifest.version} into {out_dir}")


# In the order `sparkplane bundle --help` lists them.
bundle_app.command("build")(build)
bundle_app.command("verify")(verify)
bundle_app.command("trusted")(trust.trusted)
bundle_app.command("revoke")(trust.revoke)
bundle_app.command("pack")(pack)
bundle_app.command("unpack")(unpack_command)
