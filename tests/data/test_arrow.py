"""Arrow datasets: kraken 7's schema and metadata, old files, atomic writes."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from scriba.data.arrow import SCHEMA, ArrowDataset, ArrowWriter, write_dataset
from scriba.errors import InputError

KRAKEN_META_KEYS = [
    "type",
    "alphabet",
    "text_type",
    "image_type",
    "splits",
    "im_mode",
    "legacy_polygons",
    "languages",
    "counts",
]


def _png(w: int = 20, h: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h), 200).save(buf, format="png")
    return buf.getvalue()


def test_schema_matches_kraken(kraken_data: Path) -> None:
    old = pa.ipc.open_file(pa.memory_map(str(kraken_data / "merge_tests" / "base.arrow"))).schema
    assert SCHEMA.names == old.names == ["lines", "train", "validation", "test"]
    for name in ("train", "validation", "test"):
        assert SCHEMA.field(name).type == old.field(name).type == pa.bool_()
    # kraken 7 added `language` to the struct; the older fields are unchanged.
    assert [(f.name, f.type) for f in SCHEMA.field("lines").type][:2] == [
        (f.name, f.type) for f in old.field("lines").type
    ]
    assert SCHEMA.field("lines").type.field("language").type == pa.list_(pa.string())


def test_roundtrip_and_metadata(tmp_path: Path) -> None:
    out = tmp_path / "d.arrow"
    rows = [("ab", _png(), ["fra"]), ("", _png(5, 5), None), ("ba c", _png(), ["fra", "lat"])]
    write_dataset(out, rows, seg_type="baselines", im_mode="RGB", recordbatch_size=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.arrow"]
    reader = pa.ipc.open_file(pa.memory_map(str(out)))
    assert reader.num_record_batches == 2
    assert reader.schema.remove_metadata() == SCHEMA
    meta = json.loads(reader.schema.metadata[b"lines"])
    assert list(meta) == KRAKEN_META_KEYS
    assert meta["type"] == "kraken_recognition_baseline" and meta["im_mode"] == "RGB"
    assert meta["alphabet"] == {"a": 2, "b": 2, " ": 1, "c": 1}
    assert meta["languages"] == {"fra": 2, "lat": 1}
    assert meta["counts"] == {"all": 3, "train": 0, "validation": 0, "test": 0}
    assert meta["splits"] == ["train", "eval", "test"] and meta["legacy_polygons"] is False

    ds = ArrowDataset(out)
    assert len(ds) == 3 and ds.texts() == ["ab", "", "ba c"]
    assert ds.language(0) == ["fra"] and ds.language(1) is None
    assert ds.image_bytes(1) == rows[1][1] and ds.image_bytes(-1) == rows[2][1]
    assert ds.seg_type == "baselines" and ds.legacy_polygons is False and ds.im_mode == "RGB"
    assert ds.split(0) is None
    with pytest.raises(IndexError):
        ds.text(3)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.text(2) == "ba c" and clone.image_bytes(0) == rows[0][1]


def test_old_kraken_files(kraken_data: Path) -> None:
    ds = ArrowDataset(kraken_data / "merge_tests" / "merger.arrow")
    assert ds.texts() == ["/Tngt", "Ah hodi; Ly9ẽ"]
    assert ds.language(0) is None and not ds.has_language
    assert ds.legacy_polygons is True  # files from before the flag were extracted the legacy way
    assert ds.seg_type == "baselines" and ds.im_mode == "RGB"
    assert Image.open(io.BytesIO(ds.image_bytes(1))).mode == "RGB"


def test_invalid_files(tmp_path: Path, kraken_data: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        ArrowDataset(tmp_path / "none.arrow")
    with pytest.raises(InputError, match="not an Arrow"):
        ArrowDataset(kraken_data / "000236.gt.txt")
    plain = tmp_path / "plain.arrow"
    with pa.OSFile(str(plain), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as w:
        w.write_table(SCHEMA.empty_table())
    with pytest.raises(InputError, match="valid metadata"):
        ArrowDataset(plain)


def test_splits_and_abort(tmp_path: Path) -> None:
    out = tmp_path / "s.arrow"
    writer = ArrowWriter(out, recordbatch_size=10)
    writer.add("a", _png(), None, "train")
    writer.add("b", _png(), None, "test")
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with ArrowWriter(out) as writer:
        writer.add("a", _png(), None, "train")
        writer.add("b", _png(), None, "validation")
        writer.finish({"type": "kraken_recognition_bbox"})
    ds = ArrowDataset(out)
    assert [ds.split(0), ds.split(1)] == ["train", "validation"]
    assert ds.seg_type == "bbox" and ds.legacy_polygons is True
