"""The helpers that run the installed release's CLI: files handed to the service user."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest

from controlplane.appliance.events import record_event
from controlplane.appliance.layout import Layout
from installer.provision.release_cli import ReleaseCliError, import_lifecycle_events, readable_copy


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
