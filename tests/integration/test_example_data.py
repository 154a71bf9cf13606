"""The example dataset shipped for the quickstart is complete and readable."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "froc_sample"


@pytest.mark.parametrize("split, count", [("train", 295), ("val", 50), ("test", 49)])
def test_example_manifests_resolve_to_transcribed_lines(split, count, monkeypatch, tmp_path):
    from scriba.data.sources import iter_records, read_manifest

    monkeypatch.chdir(tmp_path)  # entries resolve against the manifest's folder, wherever ketos runs
    paths = read_manifest(str(EXAMPLE / f"{split}.lst"))
    skipped = []
    records = list(iter_records(paths, "path", on_skip=skipped.append))
    assert len(records) == count and not skipped
    assert all(r.text.strip() for r in records)


def test_example_is_small():
    assert sum(p.stat().st_size for p in EXAMPLE.rglob("*") if p.is_file()) < 5 * 1024 * 1024
