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
# The groups that take longest (docs/tests.md, "The ten slowest tests"), longest first: a worker
# starts them while the other has work left, so the run does not end on one long group. (The
# Makefile passes --no-loadscope-reorder: xdist would otherwise order groups by test count.)
LONGEST_FIRST = [
    "real-engine",  # trains the demo model on a machine that has not yet, then the real vLLM
    "systemd-boxes",
    "installer/provision/test_install_audit.py",
    "installer/lifecycle/test_upgrade.py",
    "installer/bundle/test_verify.py",
    "installer/provision/test_install.py",
    "installer/ops/test_tls.py",
    "security/test_auth_failure_flood.py",
    "installer/provision/test_install_recovery.py",
    "controlplane/admission/test_admission_http.py",
]


def _group(item: pytest.Item) -> str:
    marker = item.get_closest_marker("xdist_group")
    if marker:
        return str(marker.args[0] if marker.args else marker.kwargs["name"])
    return next((name for path, name in SHARED.items() if item.path.is_relative_to(path)),
                str(item.path.relative_to(TESTS)))  # fmt: skip


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    groups = {id(item): _group(item) for item in items}
    for item in items:
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(groups[id(item)]))
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    # A stable sort: each group's tests keep their order, the other groups theirs.
    items.sort(key=lambda item: rank.get(groups[id(item)], len(rank)))
