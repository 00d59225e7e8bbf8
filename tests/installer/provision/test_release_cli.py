"""The helpers that run the installed release's CLI: files handed to the service user."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from controlplane.appliance.events import record_event
from controlplane.appliance.layout import Layout
from installer.provision import release_cli
from installer.provision.apply import RELEASE_VARS
from installer.provision.release_cli import (
    ReleaseCliError,
    import_lifecycle_events,
    readable_copy,
    run_release_cli,
    service_user,
)


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a file to another user needs root")
def test_the_service_user_gets_a_readable_copy_with_the_same_bytes(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b'{"kind": "installer.install"}\n')
    events.chmod(0o600)  # like events.jsonl: not readable by the service user
    user = "nobody"
    with readable_copy(events, user) as copy:
        assert copy != events and copy.stat().st_uid == pwd.getpwnam(user).pw_uid
        done = subprocess.run(["cat", str(copy)], user=user, capture_output=True, check=True)
        assert done.stdout == events.read_bytes()
        refused = subprocess.run(["cat", str(events)], user=user, capture_output=True)
        assert refused.returncode != 0
    assert not copy.exists()


def test_without_a_user_the_original_is_used(tmp_path: Path) -> None:
    with readable_copy(tmp_path / "e.jsonl", None) as copy:
        assert copy == tmp_path / "e.jsonl"


def test_no_current_release_is_a_clear_error(tmp_path: Path) -> None:
    layout = Layout.at(tmp_path)
    record_event(layout, "install", phase="started", version="1")
    with pytest.raises(ReleaseCliError, match="no current release to run it from"):
        import_lifecycle_events(layout)


def installed_on_a_managed_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **host: object
) -> Layout:
    """A current release whose install-vars.json has these host variables, on a root treated as
    `/` with --systemd (a test cannot install on `/`)."""
    layout = Layout.at(tmp_path)
    release = layout.release("1.0.0")
    (release / "controlplane-venv/bin").mkdir(parents=True)
    (release / "controlplane-venv/bin/sparkplane").write_text("#!/bin/sh\nexit 0\n")
    (release / "controlplane-venv/bin/sparkplane").chmod(0o755)
    layout.current.symlink_to("releases/1.0.0")
    hosts = {"localhost": {"sparkplane_allow_system_changes": True, **host}}
    (release / RELEASE_VARS).write_text(json.dumps({"inventory": {"sparkplane": {"hosts": hosts}}}))
    monkeypatch.setattr(release_cli, "manages_system", lambda _layout: True)
    return layout


def test_the_cli_runs_as_the_sparkplane_user_the_release_was_installed_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = installed_on_a_managed_root(tmp_path, monkeypatch, sparkplane_user="svc-spark")
    assert service_user(layout) == "svc-spark"
    default = installed_on_a_managed_root(tmp_path / "default", monkeypatch)
    assert service_user(default) == "sparkplane"  # group_vars/all.yml's default


def test_a_service_user_missing_from_the_host_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = installed_on_a_managed_root(tmp_path, monkeypatch, sparkplane_user="no-such-sp-user")
    record_event(layout, "install", phase="started", version="1.0.0")
    layout.controlplane_env.parent.mkdir(parents=True, exist_ok=True)
    layout.controlplane_env.write_text("SPARKPLANE_PORT=8080\n")
    for step in (import_lifecycle_events, lambda lay: run_release_cli(lay, "admins", "list")):
        with pytest.raises(ReleaseCliError, match=r"'no-such-sp-user'.*does not exist"):
            step(layout)
