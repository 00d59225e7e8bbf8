"""Tampering with built bundles: every change is caught and named, and nothing is followed."""

import base64
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.core import signing
from installer.bundle.manifest import FileEntry, parse_manifest
from installer.bundle.verify import verify_bundle

FAST = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _files(bundle: Path) -> list[FileEntry]:
    return parse_manifest((bundle / "manifest.json").read_bytes()).files


def _findings(bundle: Path, trusted) -> set[tuple[str, str]]:
    return {(f.path, f.problem) for f in verify_bundle(bundle, trusted).findings}


def _copy(built: Path, scratch: str) -> Path:
    return Path(shutil.copytree(built, Path(scratch) / "b"))


@FAST
@given(data=st.data())
def test_every_single_byte_flip_is_caught(built_tiny, trusted, data):
    entries = [e for e in _files(built_tiny) if e.size > 0]
    entry = data.draw(st.sampled_from(entries))
    offset = data.draw(st.integers(0, entry.size - 1))
    bit = data.draw(st.integers(0, 7))
    with tempfile.TemporaryDirectory() as scratch:
        bundle = _copy(built_tiny, scratch)
        with open(bundle / entry.path, "r+b") as handle:
            handle.seek(offset)
            byte = handle.read(1)[0]
            handle.seek(offset)
            handle.write(bytes([byte ^ (1 << bit)]))
        assert _findings(bundle, trusted) == {(entry.path, "modified")}


@FAST
@given(data=st.data())
def test_every_truncation_is_caught(built_tiny, trusted, data):
    entry = data.draw(st.sampled_from([e for e in _files(built_tiny) if e.size > 0]))
    length = data.draw(st.integers(0, entry.size - 1))
    with tempfile.TemporaryDirectory() as scratch:
        bundle = _copy(built_tiny, scratch)
        os.truncate(bundle / entry.path, length)
        assert _findings(bundle, trusted) == {(entry.path, "truncated")}


@FAST
@given(data=st.data())
def test_deletion_addition_and_rename_are_caught(built_tiny, trusted, data):
    entries = _files(built_tiny)
    victim = data.draw(st.sampled_from(entries))
    name = data.draw(st.from_regex(r"[a-z][a-z0-9_.-]{0,12}", fullmatch=True))
    folder = data.draw(st.sampled_from(["", "models/tiny-model/", "extras/site/nested/", "new/"]))
    new_path = folder + name + ".added"
    action = data.draw(st.sampled_from(["delete", "add", "rename"]))
    with tempfile.TemporaryDirectory() as scratch:
        bundle = _copy(built_tiny, scratch)
        (bundle / new_path).parent.mkdir(parents=True, exist_ok=True)
        if action == "delete":
            (bundle / victim.path).unlink()
            expected = {(victim.path, "missing")}
        elif action == "add":
            (bundle / new_path).write_bytes(data.draw(st.binary(max_size=64)))
            expected = {(new_path, "unexpected")}
        else:
            (bundle / victim.path).rename(bundle / new_path)
            expected = {(new_path, "renamed")}
        assert _findings(bundle, trusted) == expected


def test_every_problem_is_reported_at_once(tiny_bundle, trusted):
    (tiny_bundle / "extras/site/README.txt").write_text("changed!!!\n")
    os.truncate(tiny_bundle / "models/tiny-model/model.safetensors", 100)
    (tiny_bundle / "playbooks/site.yml").unlink()
    (tiny_bundle / "stray.txt").write_text("x")
    report = verify_bundle(tiny_bundle, trusted)
    assert not report.ok
    assert {(f.path, f.problem) for f in report.findings} == {
        ("extras/site/README.txt", "modified"),
        ("models/tiny-model/model.safetensors", "truncated"),
        ("playbooks/site.yml", "missing"),
        ("stray.txt", "unexpected"),
    }


def test_symlinks_are_never_followed(tiny_bundle, trusted, tmp_path):
    # Same content outside the bundle: following the link would make the file look valid.
    target = tmp_path / "outside.txt"
    shutil.copyfile(tiny_bundle / "extras/site/README.txt", target)
    (tiny_bundle / "extras/site/README.txt").unlink()
    (tiny_bundle / "extras/site/README.txt").symlink_to(target)
    outside_dir = tmp_path / "outside-dir"
    shutil.move(tiny_bundle / "extras/site/nested", outside_dir)
    (tiny_bundle / "extras/site/nested").symlink_to(outside_dir, target_is_directory=True)
    os.mkfifo(tiny_bundle / "extras/site/pipe")  # would block a naive reader forever
    problems = _findings(tiny_bundle, trusted)
    assert ("extras/site/pipe", "unsafe-path") in problems
    assert ("extras/site/README.txt", "unsafe-path") in problems
    assert ("extras/site/nested", "unsafe-path") in problems
    assert ("extras/site/nested/a.bin", "missing") in problems


def _resign(bundle: Path, key_path: Path, edit) -> None:
    manifest = parse_manifest((bundle / "manifest.json").read_bytes())
    raw = manifest.model_dump(by_alias=True, exclude_none=True)
    edit(raw)
    from installer.bundle.manifest import canonical_json

    data = canonical_json(raw)
    (bundle / "manifest.json").write_bytes(data)
    signature = signing.sign(signing.load_private_key(key_path), data)
    (bundle / "manifest.json.sig").write_text(base64.b64encode(signature).decode() + "\n")


def test_unsafe_paths_refused_even_when_validly_signed(tiny_bundle, trusted, keypair):
    evil = {"size": 5, "sha256": "0" * 64}

    def edit(raw):
        raw["files"] += [
            {"path": "../escape.txt", **evil},
            {"path": "/etc/passwd", **evil},
            {"path": "a//b", **evil},
        ]
        raw["files"].sort(key=lambda f: f["path"])
        raw["components"][0]["path"] = "../../etc"

    _resign(tiny_bundle, keypair[0], edit)
    report = verify_bundle(tiny_bundle, trusted)
    unsafe = {f.path for f in report.findings if f.problem == "unsafe-path"}
    assert unsafe == {"../escape.txt", "/etc/passwd", "a//b", "../../etc"}
    assert "bad-signature" not in report.problems()


def test_manifest_and_signature_damage(tiny_bundle, trusted, keypair):
    original = (tiny_bundle / "manifest.json").read_bytes()
    (tiny_bundle / "manifest.json").write_bytes(original.replace(b'"tiny"', b'"tinx"', 1))
    assert {"bad-signature"} == verify_bundle(tiny_bundle, trusted).problems()
    (tiny_bundle / "manifest.json").write_bytes(b"{not json")
    assert {"malformed-manifest", "bad-signature"} <= verify_bundle(tiny_bundle, trusted).problems()
    (tiny_bundle / "manifest.json").write_bytes(original)
    (tiny_bundle / "manifest.json.sig").write_text("!!!")
    assert {"bad-signature"} == verify_bundle(tiny_bundle, trusted).problems()
    (tiny_bundle / "manifest.json.sig").unlink()
    (tiny_bundle / "signer.pub").unlink()
    findings = {(f.path, f.problem) for f in verify_bundle(tiny_bundle, trusted).findings}
    assert findings == {("manifest.json.sig", "missing"), ("signer.pub", "missing")}


def test_unknown_signer(tiny_bundle, tmp_path):
    _, other_pub = signing.generate_keypair(tmp_path / "other")
    report = verify_bundle(tiny_bundle, [signing.load_public_key(other_pub)])
    assert report.problems() == {"unknown-signer"}
    assert report.manifest is not None and report.signer_fingerprint


def test_progress_sink_sees_every_byte(built_tiny, trusted):
    class Sink:
        total = done = 0

        def start(self, total_bytes):
            self.total = total_bytes

        def advance(self, nbytes):
            self.done += nbytes

    sink = Sink()
    report = verify_bundle(built_tiny, trusted, progress=sink, workers=3)
    assert report.ok
    assert sink.total == sink.done == report.manifest.total_bytes() == report.bytes_hashed


def test_control_files_that_are_symlinks_are_refused_once(tiny_bundle, trusted, tmp_path):
    real = tmp_path / "elsewhere.json"
    real.write_bytes((tiny_bundle / "manifest.json").read_bytes())
    (tiny_bundle / "manifest.json").unlink()
    (tiny_bundle / "manifest.json").symlink_to(real)
    report = verify_bundle(tiny_bundle, trusted)
    assert [(f.path, f.problem) for f in report.findings] == [("manifest.json", "unsafe-path")]
    assert report.manifest is None and not report.ok


@FAST
@given(data=st.data())
def test_every_byte_flip_in_the_signed_files_is_caught(built_tiny, trusted, data):
    name = data.draw(st.sampled_from(["manifest.json", "manifest.json.sig", "signer.pub"]))
    size = (built_tiny / name).stat().st_size
    offset = data.draw(st.integers(0, size - 1))
    bit = data.draw(st.integers(0, 7))
    with tempfile.TemporaryDirectory() as scratch:
        bundle = _copy(built_tiny, scratch)
        raw = bytearray((bundle / name).read_bytes())
        raw[offset] ^= 1 << bit
        (bundle / name).write_bytes(bytes(raw))
        report = verify_bundle(bundle, trusted)
        if report.ok:
            # Accepted only if the flip left the signed content itself unchanged (a whitespace
            # byte, or base64 padding bits that decode to the same bytes).
            original = (built_tiny / name).read_bytes()
            assert name != "manifest.json"
            if name == "manifest.json.sig":
                assert base64.b64decode(bytes(raw).strip()) == base64.b64decode(original.strip())
            else:
                assert signing.same_key(
                    signing.parse_public_key(bytes(raw)), signing.parse_public_key(original)
                )
        else:
            # Otherwise the bundle is refused for a trust reason, never silently used.
            assert report.problems() & {"bad-signature", "malformed-manifest", "unknown-signer"}
