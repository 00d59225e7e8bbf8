"""SVG charts and the System page's reader, without a server."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import date
from pathlib import Path

from controlplane.appliance.system_info import appliance_root, engine_flags, read_system_info
from controlplane.console.charts import DayTokens, fill_days, nice_ceiling, token_bar_chart
from controlplane.core.config import Settings
from tests.controlplane.console.appliance import lay_out_appliance


def test_nice_ceiling() -> None:
    assert [nice_ceiling(v) for v in (0, 1, 3, 7, 48, 120, 9_999)] == [1, 1, 5, 10, 50, 200, 10_000]


def test_chart_has_a_bar_pair_per_day_and_escapes_text() -> None:
    rows = fill_days([DayTokens(date(2026, 11, 20), 30, 70, 2)], date(2026, 11, 26), 7)
    assert [r.day.day for r in rows] == [20, 21, 22, 23, 24, 25, 26]
    svg = str(token_bar_chart(rows, 'Tokens <script>"x"</script>'))
    assert svg.count('class="bar-prompt"') == 7 and svg.count('class="bar-completion"') == 7
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "2026-11-20: 2 requests, 30 prompt + 70 completion tokens" in svg
    assert ">100<" in svg  # axis maximum: the day's 100 tokens


def test_engine_flags_accepts_both_spellings() -> None:
    args = ["--max-num-seqs", "32", "--max-model-len=8192", "--kv-cache-dtype", "fp8", "--other"]
    assert engine_flags(args) == [("--max-model-len", "8192"), ("--max-num-seqs", "32"),
                                  ("--kv-cache-dtype", "fp8")]  # fmt: skip


def test_system_info_is_honest_about_missing_facts(tmp_path: Path) -> None:
    info = read_system_info(None)
    assert info.manifest is None and info.plan is None and not info.certificates
    empty = read_system_info(tmp_path)
    assert empty.active_version is None and empty.preflight is None and not empty.releases


def test_system_info_reads_an_installed_root(tmp_path: Path) -> None:
    layout = lay_out_appliance(tmp_path / "root")
    settings = Settings(data_dir=layout.controlplane_data)
    assert appliance_root(settings) == layout.root
    assert appliance_root(Settings(data_dir=tmp_path / "elsewhere")) is None
    (layout.tls / "broken.pem").write_text("not a certificate")
    info = read_system_info(layout.root)
    assert info.active_version == "0.1.0" and info.manifest and info.profile == "demo"
    assert info.plan and info.plan["max_num_seqs"] == 8
    assert [c.subject for c in info.certificates] == ["CN=spark.site.local"]
    assert any("broken.pem" in problem for problem in info.problems)
    assert info.events[0]["kind"] == "installer.install"


def as_nobody(work: Callable[[], object]) -> object:
    """`work()` in a forked child that dropped to uid/gid 65534: what the service user sees
    of files the installer wrote as root (the modules are loaded already, nothing to exec)."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            answer = {"ok": repr(work())}
        except BaseException as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(writer, json.dumps(answer).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        said = json.loads(pipe.read() or "{}")
    os.waitpid(pid, 0)
    assert "error" not in said, said["error"]
    return said["ok"]


def test_a_fact_the_service_user_cannot_read_is_not_available(tmp_path: Path) -> None:
    layout = lay_out_appliance(tmp_path / "root")
    for directory in [tmp_path, *tmp_path.parents]:  # pytest's temp dirs are 0700
        if directory.stat().st_mode & 0o001:
            break
        directory.chmod(directory.stat().st_mode | 0o711)
    for path in (layout.events, layout.engine_env, layout.engine_args):
        path.chmod(0o600)  # root's, as the installer wrote them
    info = as_nobody(lambda: read_system_info(layout.root))
    assert "events=[]" in info and "engine_flags=[]" in info  # "not available", no crash
    for path in (layout.events, layout.engine_env, layout.engine_args):
        assert f"{path}: [Errno 13] Permission denied" in info
