"""``legacy_polygons``: line images as kraken 7.1.1's legacy extractor cuts them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scriba.data.extract import extract_line, open_page
from scriba.data.legacy_extract import _delaunay, _subdivide
from scriba.data.records import LineRecord
from scriba.data.xml import parse_page

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "kraken_legacy_lines.json"


def test_cremma_lines_match_kraken_legacy_images(shared_data: Path) -> None:
    """Sizes and mean values of kraken's legacy images (tests/fixtures, from bench/legacy_polygons.py).

    Straight lines are bit-identical to kraken's; curved ones differ by at most 1 grey level on some pixels
    (kraken's per-triangle affines come from an SVD, so sample positions differ in the last bits).
    """
    cremma = shared_data / "cremma_medieval"
    if not cremma.is_dir():
        pytest.skip("no CREMMA data")
    expected = json.loads(FIXTURE.read_text())["lines"]
    pages: dict[str, tuple[Image.Image, dict[str, LineRecord]]] = {}
    for want in expected:
        if want["page"] not in pages:
            image, lines = parse_page(cremma / want["page"])
            pages[want["page"]] = (open_page(image), {rec.id: rec for rec in lines})
        page, records = pages[want["page"]]
        assert page.mode == want["page_mode"]
        line = extract_line(page, records[want["id"]], legacy_polygons=True)
        mean = float(np.asarray(line, dtype=np.float64).mean())
        assert list(line.size) == want["size"], want["id"]
        tolerance = 1e-4 if want["baseline_points"] == 2 else 0.5
        assert mean == pytest.approx(want["mean"], abs=tolerance), want["id"]


def _noise_page() -> tuple[Image.Image, Image.Image]:
    """A page whose values are multiples of 10, as 'L' and as RGB."""
    vals = (np.random.default_rng(1).integers(1, 26, (200, 400)) * 10).astype(np.uint8)
    grey = Image.fromarray(vals)
    return grey, Image.merge("RGB", [grey, grey, grey])


def _record(baseline, boundary) -> LineRecord:
    return LineRecord(id="l", source="p.xml", text="x", image="p.png", kind="baselines", baseline=baseline,
                      boundary=boundary)


def test_straight_line_is_rotated_with_nearest_neighbour_and_loses_its_shift_on_grey_pages() -> None:
    grey, rgb = _noise_page()
    rec = _record([(30.0, 70.0), (330.0, 150.0)], [(30, 40), (330, 40), (330, 160), (30, 160)])
    # Sizes kraken 7.1.1 gives for this line: on RGB the whole rotated box; on a single-channel page the
    # rotation's translation is lost, and the top and right of the line with it.
    assert extract_line(rgb, rec, legacy_polygons=True).size == (320, 193)
    legacy = extract_line(grey, rec, legacy_polygons=True)
    assert legacy.size == (321, 116)
    # Nearest neighbour: only values of the page (and the 0 of the mask); the new extractor interpolates.
    assert set(np.unique(np.asarray(legacy)).tolist()) <= set(range(0, 260, 10))
    assert not set(np.unique(np.asarray(extract_line(grey, rec))).tolist()) <= set(range(0, 260, 10))


def test_polygon_subdivision_keeps_open_ends_and_closed_polygons_closed() -> None:
    open_poly = np.array([[0, 0], [4, 0], [4, 8], [0, 4]], dtype=np.float64)
    out = _subdivide(open_poly)
    assert out.tolist() == [[0, 0], [1, 0], [3, 0], [4, 2], [4, 6], [3, 7], [1, 5], [0, 4]]
    closed = np.array([[0, 0], [4, 0], [4, 8], [0, 0]], dtype=np.float64)
    out = _subdivide(closed)
    assert out.tolist() == [[3, 6], [1, 2], [1, 0], [3, 0], [4, 2], [4, 6], [3, 6]]


def _hull_area(points: np.ndarray) -> float:
    pts = sorted(map(tuple, points.tolist()))

    def half(seq):
        chain: list[tuple[float, float]] = []
        for p in seq:
            while len(chain) >= 2 and (
                (chain[-1][0] - chain[-2][0]) * (p[1] - chain[-2][1])
                - (chain[-1][1] - chain[-2][1]) * (p[0] - chain[-2][0])
            ) <= 0:
                chain.pop()
            chain.append(p)
        return chain[:-1]

    hull = half(pts) + half(pts[::-1])
    return 0.5 * abs(sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(hull, hull[1:] + hull[:1])))


def test_triangulation_of_a_long_thin_line_covers_its_hull_and_is_delaunay() -> None:
    """The shape of a rectified line: long, nearly straight top and bottom sides, a baseline between them."""
    rng = np.random.default_rng(3)
    x = np.sort(rng.random(60)) * 1400
    top = np.stack([x, 10 + rng.random(60) * 2], axis=1)
    bottom = np.stack([x[::-1], 80 + rng.random(60) * 2], axis=1)
    baseline = np.stack([np.linspace(5, 1395, 4), np.full(4, 60.0)], axis=1)
    points = np.concatenate([baseline, top, bottom])
    tris = _delaunay(points)
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    areas = 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))
    assert (areas > 0).all()
    assert areas.sum() == pytest.approx(_hull_area(points), rel=1e-9)
    for tri in tris:
        (ax, ay), (bx, by), (cx, cy) = points[tri]
        d = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
        ux = ((ax**2 + ay**2) * (by - cy) + (bx**2 + by**2) * (cy - ay) + (cx**2 + cy**2) * (ay - by)) / d
        uy = ((ax**2 + ay**2) * (cx - bx) + (bx**2 + by**2) * (ax - cx) + (cx**2 + cy**2) * (bx - ax)) / d
        radius = math.hypot(ax - ux, ay - uy)
        others = np.delete(points, tri, axis=0)
        assert (np.hypot(others[:, 0] - ux, others[:, 1] - uy) > radius * (1 - 1e-9)).all()
