"""LineDataset: samples, text transforms, labels, caching (bit-identical), subsets, augmentation."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image, ImageDraw

from scriba.codec import Codec
from scriba.data.dataset import LineDataset
from scriba.data.records import LineRecord
from scriba.data.transforms import LineTransform
from scriba.text import TextTransform


def _png(text: str, width: int) -> bytes:
    im = Image.new("L", (width, 30), 255)
    ImageDraw.Draw(im).text((5, 8), text, fill=0)
    buf = io.BytesIO()
    im.save(buf, format="png")
    return buf.getvalue()


@pytest.fixture
def records(tmp_path):
    recs = []
    texts = ["abc\tdef ", "e\u0301te", "xyz"]
    for i, t in enumerate(texts):
        recs.append(LineRecord(id=str(i), source="mem.arrow", text=t, image_bytes=_png(t, 80 + 40 * i)))
    p = tmp_path / "line.png"
    p.write_bytes(_png("path", 150))
    recs.append(LineRecord(id=str(p), source=str(p), text="path", image=str(p)))
    return recs


def _ds(records, **kw):
    lt = LineTransform(32, 0, 1, padding=8)
    tt = TextTransform(normalization="NFC")
    return LineDataset(records, lt, tt, **kw)


def test_samples(records):
    ds = _ds(records)
    assert len(ds) == 4
    s = ds[0]
    assert s["image"].shape[:2] == (1, 32) and s["image"].dtype == torch.float32
    assert s["text"] == "abc def" and s["labels"] is None and s["id"] == "0" and s["source"] == "mem.arrow"
    assert ds.texts[1] == "\u00e9te"
    assert ds[3]["image"].shape[0] == 1


def test_labels_from_codec(records):
    ds = _ds(records)
    codec = Codec.from_text(ds.texts)
    ds = _ds(records, codec=codec)
    assert ds[2]["labels"].tolist() == codec.encode("xyz")


def test_cache_is_bit_identical(records):
    plain = _ds(records)
    cached = _ds(records)
    assert cached.preload(0) == []
    assert cached.cached
    for i in range(len(records)):
        a, b = plain[i]["image"], cached[i]["image"]
        assert torch.equal(a, b), i
    assert cached.estimated_widths() == [plain[i]["image"].shape[-1] for i in range(len(records))]


def test_estimated_widths_are_close(records):
    ds = _ds(records)
    est = ds.estimated_widths()
    real = [ds[i]["image"].shape[-1] for i in range(len(ds))]
    assert all(abs(a - b) <= 0.2 * b + 2 for a, b in zip(est, real))
    assert ds.estimated_bytes() > 0


def test_preload_reports_bad_lines(records):
    bad = LineRecord(id="9", source="mem.arrow", text="bad", image_bytes=b"not a png")
    ds = _ds([*records, bad])
    errors = []
    failed = ds.preload(0, on_error=lambda i, e: errors.append((i, e)))
    assert failed == [4] and errors[0][0] == 4


def test_subset_shares_cache_and_texts(records):
    ds = _ds(records)
    ds.preload(0)
    sub = ds.subset([2, 0])
    assert sub.texts == [ds.texts[2], ds.texts[0]]
    assert torch.equal(sub[0]["image"], ds[2]["image"])


def test_augmentation_seeded(records):
    ds = _ds(records, augment=lambda im, g: im + torch.rand(im.shape, generator=g))
    a, b, c = ds[(1, 5)]["image"], ds[(1, 5)]["image"], ds[(1, 6)]["image"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    ds2 = ds.subset([0, 1], augment=False)
    assert torch.equal(ds2[(1, 5)]["image"], _ds(records)[1]["image"])
    assert _ds(records, augment=True).augmenter is not None


def test_image_mode(records):
    assert _ds(records).image_mode() in ("1", "L")
