"""PostgreSQL backups with Debian's `pg_dump`, `pg_restore` and `psql` (the server's major
version): a consistent snapshot of the appliance's schema, its audit tables read back without a
database, and an all-or-nothing restore.

The restore runs one `psql --single-transaction`: `DROP SCHEMA ... CASCADE`, then the dump's own
script (which creates the schema again). Any error rolls all of it back, so a failed restore
leaves the database as it was; tables a newer release added are dropped with the schema, so the
database ends up exactly as the backup has it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO

from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

LOCK_TIMEOUT = "10s"  # a session still holding a table lock fails the restore instead of hanging
_COPY_HEADER = re.compile(r"^COPY \S+\.(audit_entries|audit_checkpoints) \((.*)\) FROM stdin;$")
_COPY_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))")
_SIMPLE_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


class PostgresToolError(RuntimeError):
    """pg_dump, pg_restore or psql is missing or failed; the message carries its stderr."""


def schema_of(engine: Engine) -> str:
    """The schema the control plane's tables live in (the first of its search path)."""
    with engine.connect() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar()
        if schema is None:  # the schema does not exist yet (a fresh database)
            path = str(conn.execute(text("SHOW search_path")).scalar())
            names = [name.strip().strip('"') for name in path.split(",")]
            schema = next((name for name in names if name and name != "$user"), "public")
    return str(schema)


def schema_exists(engine: Engine, schema: str) -> bool:
    with engine.connect() as conn:
        query = text("SELECT 1 FROM pg_namespace WHERE nspname = :schema")
        return conn.execute(query, {"schema": schema}).first() is not None


def connection_args(url: URL, options: str = "") -> tuple[list[str], dict[str, str]]:
    """libpq arguments for the tools, with the password in the environment (not in `ps`);
    `options` (server settings, `-c name=value`) go after the URL's own."""
    params = {"host": url.host, "port": url.port, "user": url.username, "dbname": url.database}
    params.update({key: str(value) for key, value in url.query.items()})
    if options:
        params["options"] = f"{params.get('options') or ''} {options}".strip()
    conninfo = " ".join(f"{key}={_quote(str(value))}" for key, value in params.items() if value)
    env = {**os.environ, "PGPASSWORD": url.password} if url.password else dict(os.environ)
    return ["--dbname", conninfo], env


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise PostgresToolError(f"{name} not found: install Debian's postgresql-client package "
                                "of the server's major version")  # fmt: skip
    return found


def _run(argv: list[str], env: dict[str, str], stdin: IO[bytes] | None = None) -> None:
    done = subprocess.run(argv, env=env, stdin=stdin, capture_output=True, check=False)
    if done.returncode:
        stderr = done.stderr.decode(errors="replace")
        raise PostgresToolError(f"{Path(argv[0]).name} failed: {stderr.strip()[-2000:]}")


def dump(url: URL, schema: str, out: Path) -> None:
    """`pg_dump --format=custom` of one schema: one consistent snapshot, taken while serving."""
    args, env = connection_args(url)
    os.close(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))  # pg_dump keeps the mode
    _run([_tool("pg_dump"), *args, "--format=custom", f"--schema={schema}", "--no-owner",
          "--no-privileges", f"--file={out}"], env)  # fmt: skip


def restore(url: URL, schema: str, dump_file: Path) -> None:
    """Replace the schema with the dump's, in one transaction."""
    args, env = connection_args(url, f"-c lock_timeout={LOCK_TIMEOUT}")
    script = subprocess.Popen(
        [_tool("pg_restore"), "--no-owner", "--no-privileges", "--file=-", str(dump_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert script.stdout is not None and script.stderr is not None
    drop = f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'
    try:
        _run([_tool("psql"), *args, "--no-psqlrc", "--quiet", "--single-transaction",
              "--set=ON_ERROR_STOP=1", f"--command={drop}", "--file=-"], env,
             stdin=script.stdout)  # fmt: skip
    except PostgresToolError:
        script.kill()
        raise
    finally:
        script.stdout.close()
    errors = script.stderr.read().decode(errors="replace")
    script.stderr.close()
    if script.wait():
        raise PostgresToolError(f"pg_restore failed: {errors.strip()[-2000:]}")


def audit_rows(dump_file: Path) -> Iterator[tuple[str, dict[str, object]]]:
    """(table, row) of the dump's audit_entries and audit_checkpoints, read from the COPY data
    `pg_restore` prints (no database involved); bytea as bytes, times as datetimes."""
    script = subprocess.Popen(
        [_tool("pg_restore"), "--data-only", "--table=audit_entries",
         "--table=audit_checkpoints", "--file=-", str(dump_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert script.stdout is not None and script.stderr is not None
    table, columns = None, []
    for line in script.stdout:
        line = line.rstrip("\n")
        if table is None:
            header = _COPY_HEADER.match(line)
            if header:
                table = header.group(1)
                columns = [name.strip().strip('"') for name in header.group(2).split(",")]
            continue
        if line == "\\.":
            table = None
            continue
        yield table, {name: _value(name, field) for name, field in
                      zip(columns, line.split("\t"), strict=True)}  # fmt: skip
    errors = script.stderr.read()
    if script.wait():
        raise PostgresToolError(f"pg_restore could not read {dump_file}: {errors.strip()}")


def _value(column: str, field: str) -> object:
    if field == "\\N":
        return None
    value = _COPY_ESCAPE.sub(_unescape, field)
    if value.startswith("\\x") and column in ("envelope", "data", "hash", "root_hash"):
        return bytes.fromhex(value[2:])
    if column in ("time", "created"):
        return datetime.fromisoformat(value)
    if column in ("seq", "size"):
        return int(value)
    return value


def _unescape(match: re.Match[str]) -> str:
    octal, hexa, char = match.groups()
    if octal:
        return chr(int(octal, 8))
    if hexa:
        return chr(int(hexa, 16))
    return _SIMPLE_ESCAPES.get(char, char)
