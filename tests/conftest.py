"""Suite-wide scheduling for `pytest -n 2` (pytest-xdist, `--dist loadgroup`; see docs/tests.md).

Tests that share one expensive thing run on one worker, so it is made once per session: the
real vLLM engine of tests/e2e (one install, one engine) and the systemd boxes of
tests/installer/box (podman). Everything else spreads over both workers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

GROUPS = {
    Path(__file__).parent / "e2e": "real-engine",
    Path(__file__).parent / "installer" / "box": "systemd-boxes",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for directory, group in GROUPS.items():
            if item.path.is_relative_to(directory):
                item.add_marker(pytest.mark.xdist_group(group))
