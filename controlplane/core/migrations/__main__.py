"""`python -m controlplane.core.migrations new "what changes"`: write the next revision.

It builds a scratch SQLite database at head, lets Alembic's autogenerate compare it with the
models and writes `versions/NNNN_what_changes.py` (batch mode, so it runs on SQLite and
PostgreSQL). Read and complete it before committing: autogenerate does not see everything
(README.md next to this file).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command

from controlplane.core.db import init_db, make_engine
from controlplane.core.migrations import alembic_config, autogen, head


def new_revision(message: str) -> list[Path]:
    """Autogenerate the revision after head; returns the file(s) written."""
    with tempfile.TemporaryDirectory(prefix="sparkplane-migrations-") as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'head.db'}")
        try:
            init_db(engine)
            with engine.connect() as conn:
                config = alembic_config(conn, **autogen.options())
                written = command.revision(
                    config, message=message, autogenerate=True, rev_id=f"{int(head()) + 1:04d}"
                )
        finally:
            engine.dispose()
    scripts = written if isinstance(written, list) else [written]
    paths = [Path(script.path) for script in scripts if script is not None]
    if paths and importlib.util.find_spec("ruff") is not None:  # a dev checkout: the house style
        for step in (["check", "--fix", "--quiet"], ["format", "--quiet"]):
            subprocess.run([sys.executable, "-m", "ruff", *step, *map(str, paths)], check=False)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m controlplane.core.migrations")
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="autogenerate the next revision from the models")
    new.add_argument("message", help='what changes, e.g. "tenants max_n"')
    args = parser.parse_args()
    for path in new_revision(args.message):
        print(f"wrote {path}: review it, then run tests/controlplane/core/test_migrations.py")


if __name__ == "__main__":
    main()
