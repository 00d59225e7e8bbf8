import errno
import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from installer.bundle.hashing import hash_file, hash_tree_files


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 5000), min_size=1, max_size=12))
def test_parallel_hashes_match_hashlib_across_chunk_boundaries(tmp_path_factory, sizes):
    root = tmp_path_factory.mktemp("h")
    expected = {}
    for index, size in enumerate(sizes):
        data = os.urandom(size)
        (root / f"f{index}").write_bytes(data)
        expected[f"f{index}"] = hashlib.sha256(data).hexdigest()
    # A 1 KiB chunk makes most files span several reads.
    results = hash_tree_files(root, [(p, 0) for p in expected], workers=3, chunk_size=1024)
    assert {p: r.sha256 for p, r in results.items()} == expected
    assert [results[f"f{i}"].size for i in range(len(sizes))] == sizes


def test_symlinks_are_an_error_not_followed(tmp_path):
    (tmp_path / "real").write_bytes(b"data")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OSError) as caught:
        hash_file(tmp_path / "link")
    assert caught.value.errno == errno.ELOOP
    results = hash_tree_files(tmp_path, [("link", 4), ("real", 4), ("absent", 1)])
    assert isinstance(results["link"], OSError) and isinstance(results["absent"], OSError)
    assert results["real"].sha256 == hashlib.sha256(b"data").hexdigest()


def test_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(OSError, match="not a regular file"):
        hash_file(tmp_path / "pipe")
