"""Line extraction: page opening, polygon dewarping (new and legacy), bbox crops, failures."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from scriba.data.extract import LineError, extract_line, is_bitonal, load_line_image, open_page
from scriba.data.records import LineRecord
from scriba.data.xml import parse_page
from scriba.errors import InputError


def test_open_page_modes(kraken_data: Path, tmp_path: Path) -> None:
    assert open_page(str(kraken_data / "bw.png")).mode == "1"
    assert open_page(str(kraken_data / "170025120000003,0074.jpg")).mode == "L"
    assert open_page(str(kraken_data / "merge_tests" / "0014.jpg")).mode == "RGB"
    two_colours = tmp_path / "two.png"
    Image.new("RGB", (20, 10), (255, 255, 255)).save(two_colours)
    im = Image.open(two_colours).copy()
    im.putpixel((3, 3), (0, 0, 0))
    im.save(two_colours)
    assert is_bitonal(Image.open(two_colours)) and open_page(str(two_colours)).mode == "1"
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (5, 5), (10, 20, 30, 255)).save(rgba)
    assert open_page(str(rgba)).mode == "RGB"


def test_open_page_applies_exif_orientation(tmp_path: Path) -> None:
    path = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees clockwise for display
    Image.new("L", (40, 20), 128).save(path, exif=exif)
    assert open_page(str(path)).size == (20, 40)


def test_open_page_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        open_page(str(tmp_path / "nope.png"))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(InputError, match="cannot be read") as err:
        open_page(str(corrupt))
    assert err.value.path == str(corrupt)


def test_kraken_lite_page_lines(kraken_data: Path) -> None:
    image, lines = parse_page(kraken_data / "170025120000003,0074-lite.xml")
    page = open_page(image)
    sizes = [extract_line(page, line).size for line in lines]
    # Baselines of 84..1711 px; the polygons are about 50 px high.
    assert [w for w, _ in sizes] == pytest.approx([89, 1610, 1647, 1695, 1712], abs=3)
    assert all(48 <= h <= 56 for _, h in sizes)
    line = np.asarray(extract_line(page, lines[2]))
    assert line.dtype == np.uint8 and line.mean() > 60


def _band_page(baseline: list[tuple[float, float]], size=(400, 200), mode="L") -> tuple[Image.Image, LineRecord]:
    """A white page with a grey 6 px band 10 px above the baseline, inside a 40 px high polygon."""
    page = Image.new(mode, size, 255 if mode != "RGB" else (255, 255, 255))
    draw = ImageDraw.Draw(page)
    above = [(x, y - 10) for x, y in baseline]
    draw.line(above, fill=60 if mode != "RGB" else (60, 60, 60), width=6)
    top = [(x, y - 30) for x, y in baseline]
    bottom = [(x, y + 10) for x, y in reversed(baseline)]
    rec = LineRecord(
        id="l1",
        source="page.xml",
        text="x",
        image="page.png",
        kind="baselines",
        baseline=baseline,
        boundary=top + bottom,
    )
    return page, rec


def _band_rows(line: Image.Image) -> np.ndarray:
    """Per column, the mean row of the grey band's pixels (masked pixels are 0, the page 255)."""
    arr = np.asarray(line.convert("L"), dtype=np.float32)
    valid = arr > 0
    for axis in (0, 1):
        for shift in (-2, -1, 1, 2):
            valid &= np.roll(arr, shift, axis=axis) > 0  # away from the interpolated edge of the mask
    dark = valid & (arr < 150)
    cols = [np.nonzero(dark[:, x])[0].mean() for x in range(5, arr.shape[1] - 5) if dark[:, x].any()]
    return np.array(cols)


@pytest.mark.parametrize("legacy", [False, True])
def test_curved_baseline_is_straightened(legacy: bool) -> None:
    baseline = [(20.0, 120.0), (120.0, 100.0), (220.0, 125.0), (370.0, 95.0)]
    page, rec = _band_page(baseline)
    line = extract_line(page, rec, legacy_polygons=legacy)
    length = sum(math.dist(a, b) for a, b in zip(baseline, baseline[1:]))
    assert -2 < line.width - length < 12
    assert 36 <= line.height <= 46
    rows = _band_rows(line)
    assert len(rows) > 0.8 * line.width
    # The band lies along a single row in the output, 10 px above the baseline (which sits 30 px below the top).
    assert rows.std() < 2.0
    assert abs(rows.mean() - (line.height - 10 - 10)) < 4


def test_straight_sloped_baseline_is_rotated() -> None:
    baseline = [(30.0, 150.0), (330.0, 70.0)]
    page, rec = _band_page(baseline, mode="RGB")
    line = extract_line(page, rec)
    assert line.mode == "RGB"
    # The polygon's short sides are vertical, so once rotated they stick out beyond the baseline's ends.
    assert 0 <= line.width - math.dist(*baseline) < 15
    assert _band_rows(line).std() < 1.5


def test_outside_is_black_and_crop_is_tight() -> None:
    page, rec = _band_page([(20.0, 100.0), (380.0, 100.0)])
    line = extract_line(page, rec)
    assert line.size == (361, 41)
    assert line.getbbox() == (0, 0, 361, 41)
    rec.boundary = [(20, 70), (380, 70), (20, 110)]  # a triangle: the corner opposite is masked to 0
    arr = np.asarray(extract_line(page, rec))
    assert arr[-1, -1] == 0 and arr[0, 0] == 255


def test_bitonal_page_stays_bitonal() -> None:
    page, rec = _band_page([(20.0, 120.0), (200.0, 90.0), (380.0, 110.0)])
    page = page.convert("1")
    for legacy in (False, True):
        line = extract_line(page, rec, legacy_polygons=legacy)
        assert line.mode == "L"
        assert set(np.unique(np.asarray(line)).tolist()) <= {0, 255}


def test_bad_lines_raise_with_file_and_id() -> None:
    page, rec = _band_page([(20.0, 100.0), (380.0, 100.0)])
    rec.baseline = [(20.0, 100.0), (23.0, 100.0)]
    with pytest.raises(LineError, match="baseline shorter than 5px") as err:
        extract_line(page, rec)
    assert err.value.path == "page.png" and err.value.element == "l1"
    assert "page.png (l1)" in str(err.value)
    _, rec = _band_page([(20.0, 100.0), (380.0, 100.0)])
    rec.boundary = [(p[0] + 30, p[1]) for p in rec.boundary]
    with pytest.raises(LineError, match="polygon outside the image"):
        extract_line(page, rec)
    rec.boundary = None
    with pytest.raises(LineError, match="no boundary"):
        extract_line(page, rec)


def test_bbox_lines_and_vertical() -> None:
    page = Image.new("L", (100, 50), 200)
    rec = LineRecord(id="b", source="p.xml", text="t", image="p.png", kind="bbox", bbox=(10, 5, 60, 25))
    assert extract_line(page, rec).size == (50, 20)
    rec.vertical = True
    assert extract_line(page, rec).size == (20, 50)
    rec.vertical, rec.bbox = False, None
    assert extract_line(page, rec) is page
    rec.bbox = (200, 200, 300, 300)
    with pytest.raises(LineError, match="outside"):
        extract_line(page, rec)


def test_load_line_image_with_cache_and_bytes(kraken_data: Path) -> None:
    _, lines = parse_page(kraken_data / "merge_tests" / "0014.xml")
    cache: dict[str, Image.Image] = {}
    a = load_line_image(lines[0], page_cache=cache)
    b = load_line_image(lines[1], page_cache=cache)
    assert len(cache) == 1 and a.mode == b.mode == "RGB"
    buf = io.BytesIO()
    a.save(buf, format="png")
    stored = LineRecord(id="0", source="x.arrow", text="", image_bytes=buf.getvalue())
    assert load_line_image(stored).size == a.size
    stored.image_bytes = b"garbage"
    with pytest.raises(LineError, match="cannot be decoded"):
        load_line_image(stored)


def test_hook_at_baseline_end_does_not_twist_the_line() -> None:
    # eScriptorium baselines often end in a few-pixel hook; the line must stay straight (as in kraken).
    baseline = [(20.0, 120.0), (370.0, 115.0), (369.0, 108.0)]
    page, rec = _band_page(baseline[:2])
    rec.baseline = baseline
    line = extract_line(page, rec)
    assert abs(line.width - 351) < 6
    assert _band_rows(line).std() < 1.5
