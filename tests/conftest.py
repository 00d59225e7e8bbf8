"""Suite-wide scheduling for `pytest -n 2` (pytest-xdist, `--dist loadgroup`; see docs/tests.md).

Each test module runs whole on one worker, so its module-scoped fixtures (a gateway, an
installed root, a simulator) are made once and its tests keep their order. Tests that share one
session-wide expensive thing run on one worker too: the real vLLM engine of tests/e2e (one
install, one engine) and the systemd boxes of tests/installer/box (podman).
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).parent
SHARED = {TESTS / "e2e": "real-engine", TESTS / "installer" / "box": "systemd-boxes"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        group = next((name for path, name in SHARED.items() if item.path.is_relative_to(path)),
                     str(item.path.relative_to(TESTS)))  # fmt: skip
        item.add_marker(pytest.mark.xdist_group(group))
