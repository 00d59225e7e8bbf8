"""`sparkplane preflight` and `sparkplane plan`: what this host and this bundle can do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from controlplane.appliance.layout import Layout
from installer.bundle.manifest import ManifestError, parse_manifest
from installer.cli.common import console
from installer.host.facts import box_memory_bytes, collect_host_facts
from installer.host.kvcache import GIB, ModelConfigError
from installer.host.plan import PROFILES, PlanError, fit_table, make_plan
from installer.host.preflight import FAIL, PASS, BundleNeeds, run_preflight
from installer.provision.install import DEFAULT_CONTROLPLANE_PORT, DEFAULT_ENGINE_PORT

STATUS_STYLE = {PASS: "green", FAIL: "red"}


def _needs(bundle: Path | None) -> BundleNeeds:
    if bundle is None:  # no bundle: judge the host for this machine's own CPU demo bundle
        import platform

        return BundleNeeds(platform.machine(), "cpu", "wheelhouse", 0, 0, 0)
    try:
        return BundleNeeds.from_manifest(parse_manifest((bundle / "manifest.json").read_bytes()))
    except (OSError, ManifestError) as exc:
        raise typer.BadParameter(f"cannot read {bundle}/manifest.json: {exc}") from exc


def preflight_command(
    bundle: Annotated[Path | None, typer.Option(help="Bundle to check the host against.")] = None,
    root: Annotated[Path, typer.Option(help="Appliance root.")] = Path("/"),
    engine_port: int = DEFAULT_ENGINE_PORT,
    port: int = DEFAULT_CONTROLPLANE_PORT,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check the host: pass / warn / fail, with the measured value and a remedy. Fail exits 1."""
    ports = {engine_port: "engine", port: "control plane"}
    report = run_preflight(collect_host_facts(), _needs(bundle), Layout.at(root), ports)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        table = Table("status", "check", "value", "remedy")
        for check in report.checks:
            style = STATUS_STYLE.get(check.status, "yellow")
            table.add_row(f"[{style}]{check.status}[/]", check.name, check.value, check.remedy)
        console.print(table)
    if not report.ok:
        raise typer.Exit(1)


def plan_command(
    bundle: Annotated[Path, typer.Option(help="Bundle whose model to plan for.")],
    profile: Annotated[str, typer.Option(help=f"One of {', '.join(PROFILES)}.")] = "throughput",
    memory_gib: Annotated[float | None, typer.Option(help="Override the box memory.")] = None,
) -> None:
    """KV-cache budget: concurrent sequences that fit per context length, and the engine flags."""
    try:
        manifest = parse_manifest((bundle / "manifest.json").read_bytes())
    except (OSError, ManifestError) as exc:
        raise typer.BadParameter(f"cannot read {bundle}/manifest.json: {exc}") from exc
    models = {c.role: c.path for c in manifest.components if c.role in ("model", "draft_model")}
    if "model" not in models:
        raise typer.BadParameter(f"{bundle} has no model component")
    memory = int(memory_gib * GIB) if memory_gib else box_memory_bytes()
    draft = bundle / models["draft_model"] if "draft_model" in models else None
    try:
        plan = make_plan(bundle / models["model"], profile, memory, draft)
        rows = (
            plan.table if profile == "demo" else fit_table(plan.shape, "fp8", plan.kv_budget_bytes)
        )
    except (PlanError, ModelConfigError) as exc:
        console.print(f"[red]does not fit:[/] {exc}")
        raise typer.Exit(1) from exc
    shape = plan.shape
    sliding, full = shape.bytes_per_token(plan.kv_dtype)
    console.print(
        f"model {shape.model_type}: {shape.sliding_layers} sliding layers (window "
        f"{shape.sliding_window}), {shape.full_layers} full layers; KV per token "
        f"{sliding / 1024:.0f} KiB sliding + {full / 1024:.0f} KiB full ({plan.kv_dtype})"
    )
    console.print(
        f"memory {memory / GIB:.1f} GiB, weights {plan.weights_bytes / GIB:.2f} GiB, "
        f"KV budget {plan.kv_budget_bytes / GIB:.2f} GiB"
    )
    table = Table("context", "KV per sequence", "sequences that fit")
    for row in rows:
        table.add_row(
            str(row.context),
            f"{row.bytes_per_sequence / 2**20:.1f} MiB",
            str(row.sequences_that_fit),
        )
    console.print(table)
    console.print(
        f"profile {profile}: --max-model-len {plan.max_model_len} "
        f"--max-num-seqs {plan.max_num_seqs}; the control plane lets it hold "
        f"{plan.engine_queue} more waiting (SPARKPLANE_ENGINE_QUEUE), in its fair order"
    )
    console.print("engine flags: " + " ".join(plan.args))
    if draft is not None and plan.speculative_tokens:
        console.print(
            f"MTP speculative decoding: draft {draft.name}, {plan.speculative_tokens} tokens per "
            f"step (--speculative-config names its installed directory, "
            f"{Layout.at(Path('/')).models / draft.name})"
        )
    for key, value in sorted(plan.env.items()):
        console.print(f"engine env: {key}={value}")


def register(app: typer.Typer) -> None:
    app.command("preflight")(preflight_command)
    app.command("plan")(plan_command)
