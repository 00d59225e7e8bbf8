import filecmp
import itertools
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.core import signing
from installer.bundle.pack import PackError, parse_size, plan_parts
from installer.bundle.unpack import PartsError, unpack
from tests.installer.fixtures.cli import run


@pytest.fixture(scope="module")
def packed(built_tiny, keypair, tmp_path_factory):
    parts = tmp_path_factory.mktemp("parts") / "media"
    result = run("bundle", "pack", built_tiny, "--split", "1M", "--out", parts, "--key", keypair[0])
    assert result.returncode == 0, result.stderr
    return parts


def _parts(parts_dir: Path) -> list[Path]:
    return sorted(parts_dir.glob("*.part*.tar"))


def test_parts_respect_the_limit_and_round_trip(packed, built_tiny, trusted, tmp_path):
    parts = _parts(packed)
    assert len(parts) >= 2, "the 1.6 MB model must be split across 1 MiB parts"
    assert all(part.stat().st_size <= 1 << 20 for part in parts)
    index = json.loads((packed / "index.json").read_text())
    assert [p["file"] for p in index["parts"]] == [p.name for p in parts]
    report = unpack(packed, tmp_path / "out", trusted)
    assert report.ok, report.findings
    comparison = filecmp.dircmp(built_tiny, tmp_path / "out")
    assert not comparison.left_only and not comparison.right_only and not comparison.diff_files
    assert filecmp.cmp(
        built_tiny / "models/tiny-model/model.safetensors",
        tmp_path / "out/models/tiny-model/model.safetensors",
        shallow=False,
    )
    assert not (tmp_path / "out.unpack-state.json").exists()


def test_corrupt_and_missing_parts_are_named_and_nothing_is_written(packed, trusted, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    for item in packed.iterdir():
        (media / item.name).write_bytes(item.read_bytes())
    parts = _parts(media)
    data = bytearray(parts[0].read_bytes())
    data[5000] ^= 0xFF
    parts[0].write_bytes(bytes(data))
    parts[-1].unlink()
    with pytest.raises(PartsError) as caught:
        unpack(media, tmp_path / "out", trusted)
    assert caught.value.problems == sorted(
        [(parts[0].name, "modified", "sha256 does not match the signed index"),
         (parts[-1].name, "missing", "part file not found")]
    )  # fmt: skip
    assert not (tmp_path / "out").exists()
    result = run(
        "bundle", "unpack", media, "--out", tmp_path / "out2", "--trust", tmp_path / "k.pub"
    )
    assert result.returncode == 2  # unknown trust file: usage error


def test_resume_after_interruption_skips_unpacked_parts(packed, trusted, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    for item in packed.iterdir():
        (media / item.name).write_bytes(item.read_bytes())
    parts = _parts(media)
    seen = []

    def interrupt_at_second_part(message):
        seen.append(message)
        if message.startswith("unpacking") and len([m for m in seen if "unpacking" in m]) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        unpack(media, tmp_path / "out", trusted, log=interrupt_at_second_part)
    assert (tmp_path / "out.unpack-state.json").is_file()
    parts[0].unlink()  # the first part is done: the media may even be gone
    messages = []
    report = unpack(media, tmp_path / "out", trusted, log=messages.append)
    assert report.ok
    assert messages[0].startswith("resuming: 1 part(s) already unpacked")
    assert all(parts[0].name not in m for m in messages)


def test_index_signature_and_signer_are_checked(packed, trusted, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    for item in packed.iterdir():
        (media / item.name).write_bytes(item.read_bytes())
    _, other = signing.generate_keypair(tmp_path / "other")
    with pytest.raises(PackError, match="not a trusted key"):
        unpack(media, tmp_path / "o1", [signing.load_public_key(other)])
    index = (media / "index.json").read_bytes()
    (media / "index.json").write_bytes(index.replace(b'"part_size":', b'"part_size":1', 1))
    with pytest.raises(PackError, match="bad signature"):
        unpack(media, tmp_path / "o2", trusted)


def test_cli_round_trip_and_refusals(packed, keypair, tmp_path):
    result = run("bundle", "unpack", packed, "--out", tmp_path / "b", "--trust", keypair[1])
    assert result.returncode == 0, result.stderr
    assert "unpacked and verified tiny 1.0" in result.stdout
    result = run("bundle", "verify", packed, "--trust", keypair[1])
    assert result.returncode == 2 and "bundle unpack" in result.stderr
    # Unpacking over a non-empty directory is refused.
    result = run("bundle", "unpack", packed, "--out", tmp_path / "b", "--trust", keypair[1])
    assert result.returncode == 1 and "not empty" in result.stderr
    # Packing a damaged bundle is refused, and so is a key that did not sign it.
    (tmp_path / "b/extras/site/README.txt").write_text("tampered but same?")
    result = run(
        "bundle",
        "pack",
        tmp_path / "b",
        "--split",
        "4G",
        "--out",
        tmp_path / "p",
        "--key",
        keypair[0],
    )
    assert result.returncode == 1 and "extras/site/README.txt" in result.stderr
    signing.generate_keypair(tmp_path / "k2")
    result = run(
        "bundle",
        "pack",
        tmp_path / "b",
        "--split",
        "4G",
        "--out",
        tmp_path / "p",
        "--key",
        tmp_path / "k2/bundle.key",
    )
    assert result.returncode == 2 and "did not sign" in result.stderr


def test_parse_size():
    assert parse_size("4G") == 4 << 30 and parse_size("700M") == 700 << 20
    assert parse_size("25GiB") == 25 << 30 and parse_size("2097152") == 2 << 20
    for bad in ("lots", "10K", ""):
        with pytest.raises(PackError):
            parse_size(bad)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(0, 5 << 20), min_size=1, max_size=30),
    limit=st.integers(1 << 20, 3 << 20),
)
def test_plan_covers_every_byte_once_within_the_limit(sizes, limit):
    files = [(f"dir/file{i:03d}", size) for i, size in enumerate(sizes)]
    parts = plan_parts(files, limit)
    covered = {}
    for part in parts:
        assert part.used <= limit
        for path, offset, length, _file_size in part.members:
            covered.setdefault(path, []).append((offset, length))
    for path, size in files:
        pieces = sorted(covered[path])
        assert pieces[0][0] == 0
        assert all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(pieces))
        assert pieces[-1][0] + pieces[-1][1] == size


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(0, 3 << 20), min_size=1, max_size=6),
    limit=st.integers(1 << 20, 2 << 20),
)
def test_pack_unpack_round_trip_property(keypair, trusted, sizes, limit):
    import tempfile

    from installer.bundle.build import build_bundle
    from installer.bundle.pack import pack_bundle

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for index, size in enumerate(sizes):
            path = root / "src" / f"d{index % 2}" / f"file{index}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes([index]) * size)
        spec = root / "spec.yaml"
        spec.write_text(
            "schema: 1\nname: rt\nversion: '1'\nplatform: {arch: x86_64, accelerator: cpu}\n"
            "components:\n  - {name: data, role: files, source: src, dest: data}\n"
        )
        bundle = build_bundle(spec, keypair[0], root / "bundle").path
        index = pack_bundle(bundle, root / "media", limit, signing.load_private_key(keypair[0]))
        assert all(part["size"] <= limit for part in index["parts"])
        assert unpack(root / "media", root / "out", trusted).ok
        originals = sorted(p.relative_to(bundle) for p in bundle.rglob("*") if p.is_file())
        copies = sorted(
            p.relative_to(root / "out") for p in (root / "out").rglob("*") if p.is_file()
        )
        assert originals == copies
        assert all(filecmp.cmp(bundle / p, root / "out" / p, shallow=False) for p in originals)
