"""`sparkplane validate`: the on-box acceptance test, through the control plane.

1. The engine's `/health` and the control plane's `/readyz` must answer (else ValidateError).
2. The system tenant and its key (provision/system_tenant.py) are made if missing; a day-long
   key of the capped system tenant is made for the 429 check and revoked at the end.
3. The functional checks (validate_checks.py) run through the control plane with the system
   tenant's key: each passes or fails.
4. The figures (validate_figures.py), through the control plane and straight at the engine, are
   judged against the profile's reference (validate_reference.py): pass or warn.
5. The audit chain is verified (`audit verify --live`, by the installed release), covering
   every call above: the last check.
6. The report (validate_report.py) is written under `var/lib/sparkplane/reports/`, and its
   sha256 is recorded in the audit chain by the installed release (`capacity record`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controlplane.appliance.layout import Layout, read_args_file, read_env_file
from installer.lifecycle import validate_checks as checks
from installer.lifecycle.loopback import controlplane_loopback
from installer.lifecycle.status import appliance_status
from installer.lifecycle.validate_client import CallFailed, Target
from installer.lifecycle.validate_figures import Plan, measure_all, step_count
from installer.lifecycle.validate_reference import judge_all
from installer.lifecycle.validate_report import build_report, report_stem, write_report
from installer.provision.release_cli import ReleaseCliError, run_release_cli
from installer.provision.system_tenant import ensure_system_tenant, probe_key

WRONG_KEY = "sk-sparkplane-validate-wrong-key"


class ValidateError(RuntimeError):
    """Validation could not run (appliance down, no release); failed checks are in the report."""


@dataclass(frozen=True)
class ValidateResult:
    report: dict[str, Any]
    json_path: Path
    html_path: Path
    sha256: str

    @property
    def passed(self) -> bool:
        return bool(self.report["passed"])


def _flag(args: list[str], flag: str, default: int) -> int:
    return int(args[args.index(flag) + 1]) if flag in args[:-1] else default


def _verify_audit(layout: Layout) -> Callable[[], str]:
    def verify() -> str:
        try:
            said = run_release_cli(layout, "audit", "verify", "--live").stdout.strip()
        except ReleaseCliError as exc:
            raise checks.CheckFailed(str(exc)) from exc
        return said.splitlines()[-1] if said else "valid"

    return verify


def _record_hash(layout: Layout, json_path: Path) -> str:
    """`capacity record` prints `recorded sha256 <hex> ...`; returns the hex digest."""
    try:
        said = run_release_cli(layout, "capacity", "record", str(json_path)).stdout
    except ReleaseCliError as exc:
        raise ValidateError(
            f"the report's hash was not recorded in the audit chain: {exc}"
        ) from exc
    words = said.split()
    if "sha256" not in words or words.index("sha256") + 1 >= len(words):
        raise ValidateError(f"`capacity record` did not confirm the hash: {said!r}")
    return words[words.index("sha256") + 1]


def total_steps(layout: Layout, quick: bool) -> int:
    """The progress bar's length: checks, figures, the audit check, the report."""
    args = read_args_file(layout.engine_args) if layout.engine_args.is_file() else []
    plan = Plan.for_engine(
        _flag(args, "--max-num-seqs", 8), _flag(args, "--max-model-len", 512), quick
    )
    return len(checks.CHECKS) + step_count(plan) + 2


def run_validate(
    root: Path, *, quick: bool, step: Callable[[str], None] = lambda _: None
) -> ValidateResult:
    """Steps 1-6 of the module docstring; `step(label)` once per finished step."""
    started = time.monotonic()
    layout = Layout.at(root)
    status = appliance_status(layout.root)
    engine, ready = status.get("engine", {}), status.get("controlplane", {}).get("ready")
    if engine.get("health") != "ok" or ready != "ok":
        raise ValidateError(
            f"the appliance is not up: engine {engine.get('health')}, control plane {ready}"
        )
    model = str(status["model"]["served_name"])
    args = read_args_file(layout.engine_args)
    max_num_seqs = _flag(args, "--max-num-seqs", 8)
    plan = Plan.for_engine(max_num_seqs, _flag(args, "--max-model-len", 512), quick)
    url, context = controlplane_loopback(read_env_file(layout.controlplane_env))
    try:
        gateway = Target(url, ensure_system_tenant(layout), context)
        results = []
        with probe_key(layout) as capped_key:
            ctx = checks.CheckContext(
                gateway,
                model,
                Target(url, WRONG_KEY, context),
                Target(url, capped_key, context),
                _verify_audit(layout),
            )
            for name, check in checks.CHECKS:
                results.append(checks.run_check(name, check, ctx))
                step(name)
        try:
            measured = measure_all(gateway, Target(str(engine["url"])), model, plan, step)
        except CallFailed as exc:  # reported as a failed check beside the others, not instead
            measured = {"figures": {}, "curve": []}
            results.append(checks.CheckResult("figures measured", False, str(exc), 0.0))
        results.append(checks.run_check(*checks.FINAL_CHECK, ctx))
        step(checks.FINAL_CHECK[0])
    except ReleaseCliError as exc:
        raise ValidateError(f"the installed release's CLI failed: {exc}") from exc
    now = datetime.now(UTC)
    stem = report_stem(now)
    report = build_report(
        now=now, profile=status.get("profile"), model=model, release=status.get("current"),
        quick=quick, max_num_seqs=max_num_seqs, checks=[asdict(r) for r in results],
        verdicts=[v.as_dict() for v in judge_all(status.get("profile"), measured["figures"])],
        curve=measured["curve"], html_name=f"{stem}.html",
    )  # fmt: skip
    report["seconds"] = round(time.monotonic() - started, 1)
    json_path, html_path = write_report(layout.reports, stem, report)
    digest = _record_hash(layout, json_path)
    step("report")
    return ValidateResult(report, json_path, html_path, digest)
