"""`sparkplane status` as text: what the JSON has, on the terminal too."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from controlplane.appliance.events import record_event
from controlplane.appliance.layout import Layout
from installer.cli import common
from installer.cli.main import build_app


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wide terminal, so that a row is one line (the console was made at import, so COLUMNS
    set now would not reach it)."""
    monkeypatch.setattr(common.console, "width", 200)


def status_row(root: object, name: str) -> str:
    """The value in `sparkplane status`'s row `name`."""
    done = CliRunner().invoke(build_app(), ["status", "--root", str(root)])
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
