"""The ansible-runner driver: event counting, progress output and failure reporting."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console

from controlplane.appliance.layout import Layout
from controlplane.core import signing
from installer.provision.install import InstallError, install
from installer.provision.runner import run_playbook
from tests.installer.fixtures.bundles import make_bundle

PLAYBOOK = """\
- name: Runner test
  hosts: sparkplane
  gather_facts: false
  tasks:
    - name: Write a file
      ansible.builtin.copy:
        content: "hello\\n"
        dest: "{{ target }}"
        mode: "0644"
    - name: Look at it
      ansible.builtin.stat:
        path: "{{ target }}"
    - name: Fail on purpose
      ansible.builtin.fail:
        msg: boom at {{ target }}
      when: fail_now | bool
"""


def inventory() -> dict[str, object]:
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    return {"sparkplane": {"hosts": {"localhost": host}}}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "project").mkdir()
    (tmp_path / "project/site.yml").write_text(PLAYBOOK)
    return tmp_path / "project"


def test_counts_and_progress_lines_come_from_runner_events(project: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system=None, width=200)
    target = tmp_path / "hello.txt"
    result = run_playbook(
        project,
        tmp_path / "pdd",
        inventory(),
        {"target": str(target), "fail_now": False},
        "first",
        console,
    )
    assert result.succeeded
    assert (result.changed, result.failed) == (1, 0)
    assert result.changed_tasks == ["Write a file"]
    assert result.changed_by_host == {"localhost": 1}
    assert "changed localhost: Write a file" in out.getvalue()
    assert (result.artifact_dir / "stdout").is_file()
    again = run_playbook(
        project, tmp_path / "pdd", inventory(), {"target": str(target), "fail_now": False}, "second"
    )
    assert again.changed == 0 and again.changed_by_host == {"localhost": 0}


def test_failure_names_the_task_and_its_message(project: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system=None, width=200)
    target = tmp_path / "hello.txt"
    result = run_playbook(
        project,
        tmp_path / "pdd",
        inventory(),
        {"target": str(target), "fail_now": True},
        "failing",
        console,
    )
    assert not result.succeeded
    assert len(result.failures) == 1
    failure = result.failures[0]
    assert (failure.host, failure.task) == ("localhost", "Fail on purpose")
    assert failure.message == f"boom at {target}"
    assert f"failed  localhost: Fail on purpose: boom at {target}" in out.getvalue()
    assert result.artifact_dir.is_dir()


@pytest.mark.slow
def test_install_failure_shows_task_message_and_artifacts(tmp_path: Path) -> None:
    signing.generate_keypair(tmp_path / "k")
    broken = {"engine/wheelhouse/broken-1.0-py3-none-any.whl": b"this is not a zip archive"}
    bundle = make_bundle(tmp_path / "bundle", tmp_path / "k/bundle.key", extra_files=broken)
    root = tmp_path / "root"
    with pytest.raises(InstallError) as caught:
        install(bundle, root, [signing.load_public_key(tmp_path / "k/bundle.pub")])
    error = caught.value
    assert str(error) == "install failed"
    assert "task 'Install the engine wheels offline'" in error.details[0]
    assert "broken-1.0-py3-none-any.whl" in error.details[0]  # pip's own error, not "rc=1"
    assert error.details[0].endswith("(rc=1)")
    assert error.artifacts is not None and (error.artifacts / "stdout").is_file()
    layout = Layout.at(root)
    assert layout.active_version() is None  # `current` never points at a broken release
    assert layout.installed_versions() == []
