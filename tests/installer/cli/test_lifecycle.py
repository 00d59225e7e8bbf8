"""`sparkplane status` as text: what the JSON has, on the terminal too."""

from __future__ import annotations

from typer.testing import CliRunner

from controlplane.appliance.events import record_event
from controlplane.appliance.layout import Layout
from installer.cli.main import build_app


def status_row(root: object, name: str) -> str:
    """The value in `sparkplane status`'s row `name` (a wide terminal: no wrapping)."""
    done = CliRunner().invoke(build_app(), ["status", "--root", str(root)], env={"COLUMNS": "200"})
    [row] = [line for line in done.output.splitlines() if name in line]
    return row.replace("│", " ").split(name, 1)[1].strip()


def test_status_names_the_last_installer_event(tmp_path) -> None:
    layout = Layout.at(tmp_path)
    record_event(layout, "install", phase="started", version="1.0.0")
    record_event(layout, "install", phase="failed", version="1.0.0")
    value = status_row(tmp_path, "last installer event")
    assert value.endswith("Z installer.install failed 1.0.0"), value


def test_status_without_events_says_so(tmp_path) -> None:
    assert status_row(tmp_path, "last installer event") == "-"
