"""The playbooks as code: ansible-lint's production profile, and every handler a task notifies
exists in its role (Ansible finds a missing one only when the task changes, mid-install)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
ANSIBLE_LINT = Path(sys.executable).parent / "ansible-lint"


def notified(tasks: list[dict[str, object]]) -> set[str]:
    names: set[str] = set()
    for task in tasks:
        notify = task.get("notify")
        names |= {notify} if isinstance(notify, str) else set(notify or [])  # type: ignore[arg-type]
        for nested in ("block", "rescue", "always"):
            names |= notified(task.get(nested) or [])  # type: ignore[arg-type]
    return names


def handler_names(role: Path) -> set[str]:
    handlers = role / "handlers" / "main.yml"
    entries = yaml.safe_load(handlers.read_text()) if handlers.exists() else []
    return {name for entry in entries or [] for name in (entry.get("name"), entry.get("listen"))
            if name}  # fmt: skip


@pytest.mark.parametrize("role", sorted(path.name for path in (PLAYBOOKS / "roles").iterdir()))
def test_every_notified_handler_exists_in_its_role(role: str) -> None:
    directory = PLAYBOOKS / "roles" / role
    wanted: set[str] = set()
    for tasks in (directory / "tasks").glob("*.yml"):
        wanted |= notified(yaml.safe_load(tasks.read_text()) or [])
    assert wanted <= handler_names(directory), wanted - handler_names(directory)


@pytest.mark.slow
def test_ansible_lint_passes_at_the_production_profile() -> None:
    done = subprocess.run(
        [str(ANSIBLE_LINT), "--offline", "--profile", "production", "--nocolor", str(PLAYBOOKS)],
        capture_output=True, text=True, timeout=300, cwd=PLAYBOOKS.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
