"""plan.json and preflight.json: what the install decided, for the console's System page.

Each release keeps its own copy (written when it is installed), and the copies of the release
that is current are published to ROOT/var/lib/sparkplane/installer/ whenever `current` moves
(install, upgrade, rollback), so the page always describes what runs, not what was tried last.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from controlplane.appliance.layout import Layout
from installer.host.plan import EnginePlan
from installer.host.preflight import PreflightReport

PLAN_FILE = "plan.json"
PREFLIGHT_FILE = "preflight.json"


def plan_document(plan: EnginePlan) -> dict[str, Any]:
    """The EnginePlan as JSON: profile, limits, KV budget, the fit table and the engine flags."""
    return {
        "profile": plan.profile,
        "max_model_len": plan.max_model_len,
        "max_num_seqs": plan.max_num_seqs,
        "kv_dtype": plan.kv_dtype,
        "kv_budget_bytes": plan.kv_budget_bytes,
        "weights_bytes": plan.weights_bytes,
        "table": [asdict(row) for row in plan.table],
        "args": list(plan.args),
        "env": dict(plan.env),
        "speculative_tokens": plan.speculative_tokens,
        "shape": asdict(plan.shape),
    }


def preflight_document(report: PreflightReport) -> dict[str, Any]:
    """{"ok", "checks": [{name, status, detail, value, remedy}]}; detail = value (+ remedy)."""
    checks = []
    for check in report.checks:
        detail = f"{check.value} ({check.remedy})" if check.remedy else check.value
        checks.append({**asdict(check), "detail": detail})
    return {"ok": report.ok, "checks": checks}


def _write_json(path: Path, document: dict[str, Any]) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
    os.chmod(partial, 0o644)
    partial.replace(path)


def save_release_state(release: Path, plan: EnginePlan, preflight: PreflightReport) -> None:
    _write_json(release / PLAN_FILE, plan_document(plan))
    _write_json(release / PREFLIGHT_FILE, preflight_document(preflight))


def publish_release_state(layout: Layout) -> list[Path]:
    """Copy the current release's plan/preflight to the installer state dir; returns the copies.

    A release installed before these files existed has none: the old copies are removed rather
    than left describing another release.
    """
    version = layout.active_version()
    published = []
    for name in (PLAN_FILE, PREFLIGHT_FILE):
        target = layout.installer_state / name
        source = layout.release(version) / name if version else None
        if source is not None and source.is_file():
            layout.installer_state.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(name + ".partial")
            shutil.copyfile(source, partial)
            partial.replace(target)
            published.append(target)
        elif target.exists():
            target.unlink()
    return published
