"""Codec: automatic numbering, explicit mappings, encode/decode, union, merge, validity."""

from __future__ import annotations

import json

import pytest

from scriba.codec import Codec, load_codec_file
from scriba.errors import CodecError, EncodeError


def test_automatic_codec_sorted_by_code_point():
    c = Codec.from_text(["ba", "ca "])
    assert c.c2l == {" ": [1], "a": [2], "b": [3], "c": [4]}
    assert c.max_label == 4
    assert c.encode("abc") == [2, 3, 4]


def test_charset_duplicates_raise():
    with pytest.raises(CodecError):
        Codec(["a", "a"])


def test_many_to_one_and_one_to_many():
    c = Codec({"a": [1], "ab": [2], "c": [3, 4], "d": [5]})
    assert c.encode("abac") == [2, 1, 3, 4]
    assert c.max_label == 5
    out = c.decode([(2, 0, 1, 0.5), (1, 2, 3, 1.0), (3, 4, 4, 0.2), (4, 5, 6, 0.4)])
    assert out == [("ab", 0, 1, 0.5), ("a", 2, 3, 1.0), ("c", 4, 6, pytest.approx(0.3))]


def test_many_to_many():
    c = Codec({"ab": [1, 2], "c": [3]})
    assert c.encode("abc") == [1, 2, 3]
    assert c.decode_text([1, 2, 3]) == "abc"


def test_strict_encode_reports_missing():
    c = Codec("ab", strict=True)
    with pytest.raises(EncodeError) as exc:
        c.encode("abxy")
    assert exc.value.missing == {"x", "y"}
    assert Codec("ab").encode("axb") == [1, 2]


def test_decode_unknown_label():
    assert Codec("ab").decode([(9, 0, 0, 1.0), (1, 1, 1, 1.0)]) == [("a", 1, 1, 1.0)]
    with pytest.raises(EncodeError):
        Codec("ab", strict=True).decode([(9, 0, 0, 1.0)])


def test_not_prefix_free():
    with pytest.raises(CodecError, match="prefix"):
        Codec({"a": [1], "b": [1, 2]})


def test_not_singular():
    with pytest.raises(CodecError):
        Codec({"a": [1], "b": [1]})


def test_blank_label_rejected():
    with pytest.raises(CodecError):
        Codec({"a": [0]})


def test_add_labels():
    c = Codec("ba").add_labels("dc")
    assert c.c2l == {"a": [1], "b": [2], "c": [3], "d": [4]}
    assert Codec("a").add_labels(["a", "z"]).c2l == {"a": [1], "z": [2]}
    assert Codec("a").add_labels({"x": [7]}).c2l == {"a": [1], "x": [2]}


def test_merge_removes_and_renumbers():
    model = Codec("abcd")
    data = Codec("bde")
    merged, deleted = model.merge(data)
    assert deleted == {1, 3}
    assert merged.c2l == {"b": [1], "d": [2], "e": [3]}


def test_merge_keeps_shared_labels():
    model = Codec({"a": [1, 2], "x": [1, 3], "b": [4]})
    merged, deleted = model.merge(Codec({"a": [5], "z": [6]}))
    # label 1 is still used by "a", so only labels of "x" and "b" that nobody keeps go
    assert deleted == {3, 4}
    assert merged.c2l == {"a": [1, 2], "z": [3]}


def test_codec_file(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"a": [1], "b": [22], "c": [23, 24]}))
    c = Codec(load_codec_file(str(p)))
    assert c.max_label == 24
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(CodecError, match="bad.json"):
        load_codec_file(str(bad))


def test_from_spec_variants():
    assert Codec.from_spec(None, ["ab"]).c2l == {"a": [1], "b": [2]}
    assert Codec.from_spec({"x": 3}).c2l == {"x": [3]}
    assert Codec("ab").to_json() == {"a": [1], "b": [2]}


def test_codec_file_with_a_lone_surrogate_key_is_refused(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"\\ud800": [1], "a": [2]}')
    with pytest.raises(CodecError, match="lone surrogate") as err:
        load_codec_file(str(path))
    assert str(err.value).startswith(f"{path}: ")
