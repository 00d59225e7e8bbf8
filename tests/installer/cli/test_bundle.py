"""The real `sparkplane` app: exit codes, summary and JSON output.

Most calls go through Typer's CliRunner (the real app, in-process: a subprocess per call costs
seconds of imports on this machine); one test runs the installed command in a subprocess.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.installer.fixtures.bundles import write_tiny_sources
from tests.installer.fixtures.cli import run


def test_installed_command_in_a_subprocess(built_tiny, keypair):
    command = [
        sys.executable,
        "-c",
        "from installer.cli.main import main; main()",
        "bundle",
        "verify",
    ]
    result = subprocess.run(
        [*command, str(built_tiny), "--trust", str(keypair[1])], capture_output=True, text=True
    )
    assert result.returncode == 0 and "VALID" in result.stdout
    assert result.stderr == ""  # no progress bar when stderr is not a terminal
    bad = subprocess.run(
        [*command, str(built_tiny), "--root", "/nonexistent-root"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_keygen_build_verify_round_trip(tmp_path):
    keys = tmp_path / "keys"
    result = run("keygen", "--out", keys)
    assert result.returncode == 0, result.stderr
    assert "SHA256:" in result.stdout and oct((keys / "bundle.key").stat().st_mode)[-3:] == "600"
    spec = write_tiny_sources(tmp_path / "src")
    bundle = tmp_path / "bundle"
    result = run("bundle", "build", spec, "--key", keys / "bundle.key", "--out", bundle)
    assert result.returncode == 0, result.stderr
    result = run("bundle", "verify", bundle, "--trust", keys / "bundle.pub")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "VALID" in result.stdout and "tiny-model" in result.stdout and "MB/s" in result.stdout
    result = run("bundle", "verify", bundle, "--trust", keys, "--json")
    assert result.returncode == 0
    trust_dir = tmp_path / "root/etc/sparkplane/trust"  # the appliance's trust dir under --root
    trust_dir.mkdir(parents=True)
    (trust_dir / "publisher.pub").write_bytes((keys / "bundle.pub").read_bytes())
    assert run("bundle", "verify", bundle, "--root", tmp_path / "root").returncode == 0
    data = json.loads(result.stdout)
    assert data["ok"] and data["name"] == "tiny" and data["findings"] == []

    (bundle / "extras/site/README.txt").write_text("evil" * 100)
    os.remove(bundle / "playbooks/site.yml")
    result = run("bundle", "verify", bundle, "--trust", keys / "bundle.pub")
    assert result.returncode == 1
    assert "extras/site/README.txt" in result.stdout and "playbooks/site.yml" in result.stdout
    data = json.loads(run("bundle", "verify", bundle, "--trust", keys, "--json").stdout)
    assert {(f["path"], f["problem"]) for f in data["findings"]} == {
        ("extras/site/README.txt", "modified"),
        ("playbooks/site.yml", "missing"),
    }


def test_usage_errors_exit_2(tmp_path, keypair):
    result = run("bundle", "verify", tmp_path / "absent", "--trust", keypair[1])
    assert result.returncode == 2 and "not a bundle directory" in result.stderr
    assert run("bundle", "verify", tmp_path, "--trust", tmp_path / "nope.pub").returncode == 2
    empty = tmp_path / "empty-trust"
    empty.mkdir()
    assert run("bundle", "verify", tmp_path, "--trust", empty).returncode == 2
    assert run("bundle", "verify").returncode == 2
    bad_spec = tmp_path / "bad.yaml"
    bad_spec.write_text("schema: 1\nname: x\n")
    run("keygen", "--out", tmp_path / "k")
    result = run(
        "bundle", "build", bad_spec, "--key", tmp_path / "k/bundle.key", "--out", tmp_path / "b"
    )
    assert result.returncode == 2 and "invalid bundle spec" in result.stderr
    assert not Path(tmp_path / "b").exists()


def test_keygen_with_endorsement_and_revoke(tmp_path):
    assert run("keygen", "--out", tmp_path / "old").returncode == 0
    result = run("keygen", "--out", tmp_path / "new", "--endorse-with", tmp_path / "old/bundle.key")
    assert result.returncode == 0 and (tmp_path / "new/signer.endorsement").is_file()
    fingerprint = result.stdout.split("fingerprint", 1)[1].split()[0]
    result = run("bundle", "revoke", fingerprint, "--trust-dir", tmp_path / "trust")
    assert result.returncode == 0
    assert (tmp_path / "trust/revoked").read_text().strip() == fingerprint
    shutil.copyfile(tmp_path / "old/bundle.pub", tmp_path / "trust/old.pub")
    listing = run("bundle", "trusted", "--trust-dir", tmp_path / "trust").stdout
    assert f"REVOKED  {fingerprint} (no key file)" in listing
    assert "trusted  SHA256:" in listing
