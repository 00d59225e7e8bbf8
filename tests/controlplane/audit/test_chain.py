import hashlib
from datetime import UTC, datetime

import orjson
import pytest

from controlplane.audit.chain import (
    GENESIS_HASH,
    ChainFormatError,
    build_entry,
    canonical_json,
    check_kind,
    export_line,
    split_line,
)

MOMENT = datetime(2026, 11, 26, 20, 0, 0, 123456, tzinfo=UTC)


def test_canonical_json_sorts_keys_without_whitespace_in_utf8():
    assert canonical_json({"b": 1, "a": {"d": [1, 2], "c": "é"}}) == (
        '{"a":{"c":"é","d":[1,2]},"b":1}'.encode()
    )


def test_canonical_json_refuses_what_it_cannot_serialise():
    with pytest.raises(ChainFormatError, match="not JSON-serialisable"):
        canonical_json({"x": object()})
    with pytest.raises(ChainFormatError):
        canonical_json({1: "non-string key"})


def test_entry_hash_is_domain_separated_sha256_over_prev_and_envelope():
    data = canonical_json({"status": 200})
    entry = build_entry(GENESIS_HASH, 1, "api.request", "acme", data, MOMENT)
    digest = hashlib.sha256(b"\x01" + data).hexdigest()
    expected_envelope = (
        '{"data":"' + digest + '","kind":"api.request","seq":1,"tenant":"acme",'
        '"time":"2026-11-26T20:00:00.123456Z"}'
    ).encode()
    assert entry.envelope == expected_envelope
    assert entry.hash == hashlib.sha256(b"\x00" + GENESIS_HASH + expected_envelope).digest()
    following = build_entry(entry.hash, 2, "api.request", None, data, MOMENT)
    assert following.hash == hashlib.sha256(b"\x00" + entry.hash + following.envelope).digest()


def test_export_line_is_json_and_splits_back_to_the_exact_bytes():
    data = canonical_json({"prompt": 'a,"d":x}', "n": 1})
    entry = build_entry(GENESIS_HASH, 7, "api.completion", 't,"d":', data, MOMENT)
    line = export_line(entry.hash, entry.envelope, entry.data)
    parsed = orjson.loads(line)
    assert parsed["h"] == entry.hash.hex() and parsed["e"]["seq"] == 7
    assert split_line(line) == (entry.hash, entry.envelope, entry.data)
    withheld = export_line(entry.hash, entry.envelope, None)
    assert split_line(withheld) == (entry.hash, entry.envelope, None)


@pytest.mark.parametrize(
    "kind", ["", "API.request", "api request", "api..x", "x" * 65, "1api", "api.request\n"]
)
def test_bad_kinds_are_refused(kind):
    with pytest.raises(ChainFormatError, match="lowercase dotted"):
        check_kind(kind)
