"""`sparkplane` loads only the package of the command being run."""

from __future__ import annotations

import subprocess
import sys

import typer.main

from installer.cli.main import REGISTRARS, build_app


def command_names(app: typer.Typer) -> set[str]:
    return set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_every_command_is_routed_to_the_module_that_defines_it() -> None:
    assert command_names(build_app()) == set(REGISTRARS)
    for name, module in REGISTRARS.items():
        assert name in command_names(build_app([module])), (name, module)


def test_an_installer_command_does_not_import_the_control_plane() -> None:
    probe = (
        "import sys\n"
        "sys.argv = ['sparkplane', 'bundle', '--help']\n"
        "from installer.cli.main import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('controlplane.tenancy.models', 'fastapi')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "Usage: sparkplane bundle" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"
