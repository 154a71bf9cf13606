"""Manifests, globs and record streams for every input format."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from scriba.data.records import SkippedItem
from scriba.data.sources import expand_paths, gt_path, iter_records, read_manifest
from scriba.errors import UsageError


def test_manifest_entries_resolve_against_cwd_then_manifest_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.png").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"x")
    lists = tmp_path / "lists"
    lists.mkdir()
    manifest = lists / "train.lst"
    manifest.write_text("../data/a.png\n\n  b.png  \nmissing.png\n")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        entries = read_manifest(manifest)
    # ../data/a.png only exists relative to the manifest; b.png exists from the cwd.
    assert entries == [str(tmp_path / "data" / "a.png"), "b.png"]
    assert 'Invalid entry "missing.png"' in caplog.text and str(manifest) in caplog.text


def test_bad_manifests(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot be read") as err:
        read_manifest(tmp_path / "none.lst")
    assert err.value.path == str(tmp_path / "none.lst")
    binary = tmp_path / "bin.lst"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(UsageError, match="binary"):
        read_manifest(binary)
    latin1 = tmp_path / "latin.lst"
    latin1.write_bytes("caf\xe9.png\n".encode("latin-1"))
    with pytest.raises(UsageError, match="UTF-8"):
        read_manifest(latin1)


def test_real_split_manifest_from_dataset_folder(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(shared_data / "froc_mss")
    entries = read_manifest("splits/test.lst")
    assert len(entries) == 340 and entries[0] == "BnF_fr_854_Chansonnier-I/0140/05.png"


def test_expand_paths(tmp_path: Path) -> None:
    (tmp_path / "x" / "y").mkdir(parents=True)
    for name in ("x/1.xml", "x/y/2.xml", "x/y/3.txt"):
        (tmp_path / name).write_text("")
    assert expand_paths([str(tmp_path / "**" / "*.xml")]) == [str(tmp_path / "x/1.xml"), str(tmp_path / "x/y/2.xml")]
    assert expand_paths([str(tmp_path / "x"), str(tmp_path / "x/1.xml")]) == [str(tmp_path / "x/1.xml")]


def test_gt_path_strips_every_suffix() -> None:
    assert gt_path("dir.v1/a.b.png") == "dir.v1/a.gt.txt"
    assert gt_path("010001.png") == "010001.gt.txt"


def test_path_records(kraken_data: Path) -> None:
    skipped: list[SkippedItem] = []
    paths = sorted(str(p) for p in (kraken_data / "merge_tests").glob("*.jpg"))
    records = list(iter_records(paths, "path", on_skip=skipped.append))
    assert [r.text for r in records] == ["Ud; lib;", "ex~ Sĩ", "/Tngt", "Ah hodi; Ly9ẽ"]
    assert all(r.kind == "bbox" and r.bbox is None and r.image == r.source for r in records)
    assert [(Path(s.source).name, s.reason.split(" ")[0]) for s in skipped] == [("0014.jpg", "no")]


def test_xml_records_and_skips(kraken_data: Path) -> None:
    skipped: list[SkippedItem] = []
    paths = [str(kraken_data / "170025120000003,0074-lite.xml"), str(kraken_data / "page" / "invalid" / "dims.xml")]
    records = list(iter_records(paths, "xml", on_skip=skipped.append))
    assert len(records) == 5 and records[1].text == ""
    assert [(Path(s.source).name, s.reason) for s in skipped] == [("dims.xml", "invalid page imageWidth 'foo'")]
    bbox = list(iter_records(paths[:1], "page", linetype="bbox", on_skip=skipped.append))
    assert [r.kind for r in bbox] == ["bbox"] * 5


def test_binary_records(kraken_data: Path) -> None:
    records = list(iter_records([str(kraken_data / "merge_tests" / "base.arrow")], "binary"))
    assert [r.text for r in records] == ["Ud; lib;", "ex~ Sĩ"]
    assert records[0].image_bytes[:4] == b"\x89PNG" and records[0].kind == "baselines"
    skipped: list[SkippedItem] = []
    assert list(iter_records([str(kraken_data / "000236.gt.txt")], "binary", on_skip=skipped.append)) == []
    assert "not an Arrow" in skipped[0].reason


def test_unknown_format() -> None:
    with pytest.raises(UsageError):
        list(iter_records(["a"], "hocr"))


def test_a_pattern_that_matches_nothing_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        assert expand_paths([str(tmp_path / "*.png")]) == []
    assert f"{tmp_path / '*.png'} matches no file" in caplog.text


def test_resolve_inputs_takes_files_globs_and_manifests(tmp_path: Path, monkeypatch) -> None:
    from scriba.data.sources import resolve_inputs

    for name in ("a.png", "b.png", "a.gt.txt", "b.gt.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "lines.lst").write_text("b.png\na.png\n", encoding="utf-8")
    (tmp_path / "more.txt").write_text("a.png\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    got = resolve_inputs(["lines.lst", "*.png", "more.txt"])
    assert [Path(p).name for p in got] == ["b.png", "a.png", "a.png", "b.png", "a.png"]
    assert resolve_inputs(got) == got  # data files pass unchanged
    assert resolve_inputs("a.gt.txt") == ["a.gt.txt"]  # a line's transcription is not a manifest
