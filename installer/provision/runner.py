"""Drive ansible-runner over the bundle's playbooks, with a rich progress display from its events.

The playbook runs as a subprocess of ansible-runner; its events (task start, ok/changed/failed)
arrive through `event_handler` and drive the display. Artifacts (stdout, job events) are kept
under the private data dir so that a failure can point the operator at them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

KEEP_ARTIFACT_RUNS = 20


@dataclass(frozen=True)
class TaskFailure:
    host: str
    task: str
    message: str


@dataclass
class RunResult:
    status: str
    rc: int
    artifact_dir: Path
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    changed_tasks: list[str] = field(default_factory=list)
    failures: list[TaskFailure] = field(default_factory=list)
    changed_by_host: dict[str, int] = field(default_factory=dict)
    # task name -> host -> the module's result, for tasks that ran (ok or failed)
    results: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.status == "successful" and self.rc == 0 and not self.failures


def _failure_message(result: Mapping[str, Any]) -> str:
    """The most useful line of a failed task's result: a command's own error beats
    ansible's generic "non-zero return code"."""
    msg = str(result.get("msg") or "").strip()
    stderr_lines = [line for line in str(result.get("stderr") or "").splitlines() if line.strip()]
    if stderr_lines and (not msg or msg == "non-zero return code"):
        return f"{stderr_lines[-1].strip()} (rc={result.get('rc')})"
    if msg:
        return msg
    reason = result.get("reason")
    return str(reason) if reason else f"rc={result.get('rc')}"


class _EventTracker:
    """Counts task outcomes and updates the progress line from ansible-runner events."""

    def __init__(self, progress: Progress | None, console: Console | None) -> None:
        self.progress = progress
        self.console = console
        self.task_id = progress.add_task("starting ansible", total=None) if progress else None
        self.result_counts = {"ok": 0, "changed": 0, "failed": 0, "skipped": 0}
        self.changed_tasks: list[str] = []
        self.failures: list[TaskFailure] = []
        self.results: dict[str, dict[str, dict[str, Any]]] = {}
        self.task_started = time.monotonic()

    def __call__(self, event: Mapping[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        task = str(data.get("task") or "")
        host = str(data.get("host") or "")
        if kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            self.task_started = time.monotonic()
            self._describe(f"{data.get('role') or 'play'}: {task}")
        if kind in ("runner_on_ok", "runner_on_failed"):
            self.results.setdefault(task, {})[host] = dict(data.get("res") or {})
        if kind == "runner_on_ok":
            changed = bool((data.get("res") or {}).get("changed"))
            self.result_counts["changed" if changed else "ok"] += 1
            if changed:
                self.changed_tasks.append(task)
                self._print(f"[yellow]changed[/] {host}: {task}{self._elapsed()}")
        elif kind == "runner_on_skipped":
            self.result_counts["skipped"] += 1
        elif kind in ("runner_on_failed", "runner_on_unreachable"):
            if data.get("ignore_errors"):
                return True
            message = _failure_message(data.get("res") or {})
            self.result_counts["failed"] += 1
            self.failures.append(TaskFailure(host, task, message))
            self._print(f"[red]failed[/]  {host}: {task}: {message}")
        return True

    def _elapsed(self) -> str:
        seconds = time.monotonic() - self.task_started
        return f" ({seconds:.1f}s)" if seconds >= 1 else ""

    def _describe(self, text: str) -> None:
        if self.progress is not None and self.task_id is not None:
            counts = self.result_counts
            summary = f"ok={counts['ok']} changed={counts['changed']} failed={counts['failed']}"
            self.progress.update(self.task_id, description=f"{text}  [dim]{summary}[/]")

    def _print(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text, highlight=False)


def _environment(private_data_dir: Path, playbook_dir: Path) -> dict[str, str]:
    """Keep ansible's state inside the private data dir and find this interpreter's tools."""
    scratch = private_data_dir / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    bin_dir = str(Path(sys.executable).parent)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_HOME": str(private_data_dir / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(scratch),
        "ANSIBLE_REMOTE_TEMP": str(scratch),
        "ANSIBLE_ROLES_PATH": str(playbook_dir / "roles"),
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_PIPELINING": "true",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_GALAXY_SERVER_LIST": "",
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
    }


def run_playbook(
    playbook_dir: Path,
    private_data_dir: Path,
    inventory: dict[str, Any] | str,
    extravars: dict[str, Any],
    ident: str,
    console: Console | None = None,
    limit: str | None = None,
    playbook: str = "site.yml",
) -> RunResult:
    """Run `playbook` from `playbook_dir`; never raises for a failed play, returns the outcome."""
    private_data_dir.mkdir(parents=True, exist_ok=True)
    show = console is not None and console.is_terminal
    progress = (
        Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        if show
        else None
    )
    tracker = _EventTracker(progress, console)
    if progress is not None:
        progress.start()
    try:
        runner = ansible_runner.run(
            private_data_dir=str(private_data_dir),
            project_dir=str(playbook_dir),
            playbook=playbook,
            inventory=inventory,
            extravars=extravars,
            envvars=_environment(private_data_dir, playbook_dir),
            ident=ident,
            limit=limit,
            quiet=True,
            rotate_artifacts=KEEP_ARTIFACT_RUNS,
            event_handler=tracker,
        )
    finally:
        if progress is not None:
            progress.stop()
    stats = runner.stats or {}

    def total(key: str) -> int:
        return sum((stats.get(key) or {}).values())

    return RunResult(
        status=str(runner.status),
        rc=int(runner.rc if runner.rc is not None else -1),
        artifact_dir=Path(runner.config.artifact_dir),
        ok=total("ok"),
        changed=total("changed"),
        failed=total("failures") + total("dark"),
        skipped=total("skipped"),
        changed_tasks=tracker.changed_tasks,
        failures=tracker.failures,
        results=tracker.results,
        changed_by_host={host: 0 for host in stats.get("processed") or {}}
        | dict(stats.get("changed") or {}),
    )


class InventoryError(RuntimeError):
    """`ansible-inventory` could not read the inventory; the message has its last word."""


def inventory_hosts(
    inventory: Path, private_data_dir: Path, playbook_dir: Path, group: str
) -> dict[str, dict[str, Any]]:
    """The hosts of `group` (and of its child groups) with their inventory variables, as
    `ansible-inventory --list` resolves them (host vars, group vars, group_vars/ beside it)."""
    private_data_dir.mkdir(parents=True, exist_ok=True)
    program = Path(sys.executable).parent / "ansible-inventory"
    env = {**os.environ, **_environment(private_data_dir, playbook_dir)}
    done = subprocess.run(
        [str(program), "-i", str(inventory), "--list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        raise InventoryError(
            f"ansible-inventory {inventory}: {said[-1] if said else done.returncode}"
        )
    listing = json.loads(done.stdout)
    hostvars = listing.get("_meta", {}).get("hostvars", {})
    return {name: dict(hostvars.get(name) or {}) for name in _group_members(listing, group)}


def _group_members(listing: dict[str, Any], group: str) -> list[str]:
    entry = listing.get(group) or {}
    names = list(entry.get("hosts") or [])
    for child in entry.get("children") or []:
        names += _group_members(listing, child)
    return list(dict.fromkeys(names))
