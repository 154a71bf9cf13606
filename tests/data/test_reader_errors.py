"""The readers' answers to malformed input, one reader at a time (the CLI side: tests/cli/test_bad_input.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from bad_input import DATASET_META, alto_page, arrow_file, png_bomb, png_bytes
from scriba.data.arrow import ArrowDataset
from scriba.data.images import header_size, image_error
from scriba.data.records import SkippedItem
from scriba.data.xml import parse_page
from scriba.errors import InputError

PAGE = """<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15">
  <Page imageFilename="p.png" imageWidth="100" imageHeight="50"><TextRegion id="r">
    <TextLine id="a"><Coords points="1,1 90,1 90,20 1,20"/><Baseline points="1,18 90,18"/>
      <TextEquiv><Unicode>first</Unicode></TextEquiv></TextLine>
    <TextLine id="b"><Coords points="{coords}"/><Baseline points="{baseline}"/>
      <TextEquiv><Unicode>second</Unicode></TextEquiv></TextLine>
  </TextRegion></Page>
</PcGts>"""


@pytest.mark.parametrize(
    "coords, baseline, reason",
    [
        ("1,25 90,25 90,45 1,45", "1,40 inf,40", "coordinates are not finite numbers"),
        ("1,25 90,25 90,45 1,45", "1,40 1e400,40", "coordinates are not finite numbers"),
        ("1,25 90,25 90,45 1", "1,40 90,40", "odd number of coordinates"),
        ("1,25 x,25 90,45 1,45", "1,40 90,40", "coordinates are not finite numbers"),
        ("1,25 90,25 20000000,45 1,45", "1,40 90,40", "coordinates are not finite numbers"),
        ("1,25 90,25 50,25", "1,25 90,25", "boundary polygon has no area"),
    ],
)
def test_pagexml_bad_line_is_skipped_alone(tmp_path: Path, coords: str, baseline: str, reason: str) -> None:
    xml = tmp_path / "p.xml"
    xml.write_text(PAGE.format(coords=coords, baseline=baseline))
    skipped: list[SkippedItem] = []
    _, lines = parse_page(xml, on_skip=skipped.append)
    assert [line.id for line in lines] == ["a"]
    (item,) = skipped
    assert item.element == "b" and item.reason.startswith(reason)


def test_alto_inf_box_falls_back_to_the_polygon(tmp_path: Path) -> None:
    _, lines = parse_page(alto_page(tmp_path, "p.xml", {"width": "1e400"} | {"hpos": "inf"}))
    bad = next(line for line in lines if line.id == "bad")
    assert bad.bbox == (10, 5, 310, 50)


def test_alto_page_size_that_does_not_fit_the_image_is_refused(tmp_path: Path) -> None:
    xml = alto_page(tmp_path, "p.xml")
    text = xml.read_text().replace(">pixel<", ">mm10<").replace('WIDTH="600" HEIGHT="200"', 'WIDTH="1e-300" HEIGHT="1"')
    xml.write_text(text)
    with pytest.raises(InputError, match="page size in mm10 does not fit its 600x200 pixel image"):
        parse_page(xml)


def test_skipped_items_name_their_file_once() -> None:
    assert str(SkippedItem("a.png", "a.png", "a.png: image cannot be read")) == "a.png: image cannot be read"
    assert str(SkippedItem("p.xml", None, "p.xml (line 4): XML does not parse")) == "p.xml (line 4): XML does not parse"
    assert str(SkippedItem("d.arrow", "row 1", "d.arrow: no image")) == "d.arrow (row 1): no image"
    assert str(SkippedItem("p.xml", "l1", "p.xml (l1): odd")) == "p.xml (l1): odd"
    assert str(SkippedItem("p.xml", "l1", "baseline too short")) == "p.xml (l1): baseline too short"


def test_image_errors_in_words(tmp_path: Path) -> None:
    bomb = png_bomb(tmp_path / "bomb.png")
    assert header_size(str(bomb)) is None and header_size(png_bytes(7, 3)) == (7, 3)
    for data in (b"not an image", b"\x89PNG\r\n\x1a\n broken"):
        with pytest.raises(Exception) as err:
            Image.open(io.BytesIO(data))
        assert "BytesIO" not in image_error(err.value) and "not an image file" in image_error(err.value)
    with pytest.raises(Image.DecompressionBombError) as err:
        Image.open(bomb)
    assert (
        image_error(err.value)
        == "image of 1,600,000,000 pixels exceeds the limit of 800,000,000 (decompression bomb guard)"
    )


STRUCT = pa.struct([("text", pa.string()), ("im", pa.binary())])


@pytest.mark.parametrize(
    "lines, metadata, columns, message",
    [
        (pa.array([{"text": "a", "im": b""}], STRUCT), '"just text"', {}, "metadata record is a string"),
        (pa.array([{"text": "a", "im": b""}], STRUCT), "null", {}, "metadata record is null"),
        (pa.array([1]), DATASET_META, {}, "column 'lines' holds int64, not a struct"),
        (
            pa.array([{"text": 5, "im": b""}], pa.struct([("text", pa.int64()), ("im", pa.binary())])),
            DATASET_META,
            {},
            "field 'lines.text' holds int64, not string",
        ),
        (
            pa.array([{"text": "a", "im": b"", "language": "fr"}], pa.struct([*STRUCT, ("language", pa.string())])),
            DATASET_META,
            {},
            "field 'lines.language' holds string, not a list of strings",
        ),
        (pa.array([{"text": "a", "im": b""}], STRUCT), DATASET_META, {"train": [1]}, "column 'train' holds int64"),
    ],
)
def test_foreign_arrow_layouts(tmp_path: Path, lines, metadata, columns, message) -> None:
    path = arrow_file(tmp_path / "x.arrow", lines, metadata, **columns)
    with pytest.raises(InputError, match=message) as err:
        ArrowDataset(path)
    assert str(err.value).startswith(f"{path}: ")


def test_null_image_rows_are_skipped_with_their_row_number(tmp_path: Path) -> None:
    from scriba.data.sources import iter_records

    rows = [{"text": "ab", "im": None}, {"text": "cd", "im": png_bytes()}, {"text": None, "im": None}]
    path = arrow_file(tmp_path / "x.arrow", pa.array(rows, STRUCT), DATASET_META)
    skipped: list[SkippedItem] = []
    records = list(iter_records([str(path)], "binary", on_skip=skipped.append))
    assert [r.text for r in records] == ["cd"]
    assert [str(s) for s in skipped] == [f"{path} (row 0): row has no image", f"{path} (row 2): row has no image"]
