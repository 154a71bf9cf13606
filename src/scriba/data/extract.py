"""Line images out of pages, the way kraken cuts them.

Baseline lines: the polygon's bounding box is cropped, everything outside the polygon set to 0 (black),
then the line is straightened along its baseline (a rotation for a 2-point baseline, otherwise a PIL
``Image.MESH`` warp over the baseline's envelope) and cropped to its non-zero content. With
``legacy_polygons`` kraken's legacy extractor is followed instead (:mod:`scriba.data.legacy_extract`).
Bounding-box lines are plain crops, rotated for vertical text. Bitonal pages are read as mode '1' and
sampled with nearest neighbour so that they stay bitonal.
"""

from __future__ import annotations

import io
import math
from collections.abc import MutableMapping

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from scriba.data.images import image_error
from scriba.data.legacy_extract import legacy_line
from scriba.data.records import LineRecord, polygon_area
from scriba.errors import InputError

MIN_BASELINE_LENGTH = 5.0
MIN_POLYGON_AREA = 1.0
# A miter joint is stretched by 1/cos(half the turn); beyond this factor (turns over ~120 degrees) the
# envelope would fold, so the offset is capped.
_MAX_MITER = 2.0


class LineError(InputError):
    """A line that cannot be extracted; ``reason`` is the bare cause (for counting skips by reason)."""

    def __init__(self, reason: str, *, path: str | None = None, element: str | None = None):
        self.reason = reason
        super().__init__(reason, path=path, element=element)


def is_bitonal(im: Image.Image) -> bool:
    """Exactly two distinct pixel values (kraken's test)."""
    if im.mode == "1":
        return True
    colors = im.getcolors(2)
    return colors is not None and len(colors) == 2


def _normalize_mode(im: Image.Image) -> Image.Image:
    if im.mode in ("1", "L", "RGB"):
        return im
    if im.mode in ("LA", "I", "I;16", "I;16B", "I;16L", "F"):
        highest = im.getextrema()[1]
        if im.mode in ("I", "I;16", "I;16B", "I;16L") and isinstance(highest, (int, float)) and highest > 255:
            im = im.point(lambda v: v / 256)
        return im.convert("L")
    if im.mode == "P":
        rgb = im.convert("RGB")
        return rgb.convert("L") if _is_grey(rgb) else rgb
    return im.convert("RGB")


def _is_grey(im: Image.Image) -> bool:
    r, g, b = im.split()
    return r.tobytes() == g.tobytes() == b.tobytes()


def open_page(path: str, data: bytes | None = None) -> Image.Image:
    """Open a page (or line) image: EXIF orientation applied, bitonal images as mode '1', else 'L'/'RGB'.

    The pixels are decoded here, once, so that cutting many lines does not decode the file again.
    ``data`` is the file's content when the caller has already read it.
    """
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as raw:
            im = ImageOps.exif_transpose(raw)
            im.load()
    except FileNotFoundError:
        raise InputError("image file not found", path=path) from None
    except Exception as e:  # noqa: BLE001 - decoders of damaged files raise all kinds of errors
        raise InputError(f"image cannot be read: {image_error(e)}", path=path) from None
    im = _normalize_mode(im)
    if im.mode != "1" and is_bitonal(im):
        im = im.convert("1")
    return im


def extract_line(page: Image.Image, record: LineRecord, legacy_polygons: bool = False) -> Image.Image:
    """The line image of ``record`` cut from ``page`` (opened with :func:`open_page`).

    Raises :class:`LineError` (an :class:`InputError`) naming the file and line id when the line cannot be cut.
    """
    where = {"path": record.image or record.source, "element": record.id}
    if record.kind == "baselines" and record.baseline is not None:
        if not record.boundary or len(record.boundary) < 3:
            raise LineError("no boundary polygon", **where)
        if polygon_area(record.boundary) < MIN_POLYGON_AREA:
            # Pillow draws the outline of a flat polygon: a 1-pixel line image with the whole transcription
            raise LineError("boundary polygon has no area", **where)
        return _polygon_line(page, record, legacy_polygons, where)
    if record.bbox is None:
        return page.rotate(90, expand=True) if record.vertical else page
    x0, y0, x1, y1 = (int(v) for v in record.bbox)
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, page.width), min(y1, page.height)
    if x1 <= x0 or y1 <= y0:
        raise LineError("bounding box outside the image", **where)
    line = page.crop((x0, y0, x1, y1))
    return line.rotate(90, expand=True) if record.vertical else line


def load_line_image(
    record: LineRecord,
    legacy_polygons: bool = False,
    page_cache: MutableMapping[str, Image.Image] | None = None,
) -> Image.Image:
    """Any record to its line image: decoded ``image_bytes``, the whole image (path format), or a cut line."""
    if record.image_bytes is not None:
        try:
            im = Image.open(io.BytesIO(record.image_bytes))
            im.load()
        except Exception as e:
            raise LineError(
                f"stored line image cannot be decoded: {image_error(e)}", path=record.source, element=record.id
            ) from None
        return im
    if record.image is None:
        raise LineError("record has no image", path=record.source, element=record.id)
    page = page_cache.get(record.image) if page_cache is not None else None
    if page is None:
        page = open_page(record.image)
        if page_cache is not None:
            page_cache[record.image] = page
    return extract_line(page, record, legacy_polygons)


def _polygon_line(page: Image.Image, record: LineRecord, legacy: bool, where: dict) -> Image.Image:
    resample = Image.Resampling.BILINEAR
    if page.mode == "1":
        page = page.convert("L")
        resample = Image.Resampling.NEAREST
    polygon = np.asarray(record.boundary, dtype=np.float64)
    baseline = _dedupe(np.asarray(record.baseline, dtype=np.float64))
    if len(baseline) < 2 or np.linalg.norm(np.diff(baseline, axis=0), axis=1).sum() < MIN_BASELINE_LENGTH:
        raise LineError("baseline shorter than 5px", **where)
    if (polygon < 0).any() or (polygon[:, 0] >= page.width).any() or (polygon[:, 1] >= page.height).any():
        raise LineError("polygon outside the image", **where)
    if legacy:
        return _content(legacy_line(page, polygon, baseline, resample == Image.Resampling.NEAREST), where)
    x0, y0 = (int(v) for v in polygon.min(axis=0))
    x1, y1 = (int(v) for v in polygon.max(axis=0))
    patch = page.crop((x0, y0, x1 + 1, y1 + 1))
    origin = np.array([x0, y0], dtype=np.float64)
    polygon = polygon - origin
    baseline = baseline - origin
    mask = Image.new("L", patch.size, 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in polygon.tolist()], fill=255, outline=255)
    patch = Image.composite(patch, Image.new(patch.mode, patch.size, 0), mask)

    if len(baseline) > 2:
        baseline = _drop_short_segments(baseline, polygon)
    if len(baseline) == 2:
        d = baseline[1] - baseline[0]
        line = patch.rotate(math.degrees(math.atan2(d[1], d[0])), resample=resample, expand=True, fillcolor=0)
    else:
        line = _mesh_line(patch, baseline, polygon, resample)
    return _content(line, where)


def _content(line: Image.Image, where: dict) -> Image.Image:
    box = line.getbbox()
    if box is None:
        raise LineError("line image is empty (polygon has no area)", **where)
    return line.crop(box)


def _dedupe(points: np.ndarray) -> np.ndarray:
    keep = np.ones(len(points), dtype=bool)
    keep[1:] = np.linalg.norm(np.diff(points, axis=0), axis=1) > 1e-9
    return points[keep]


def _drop_short_segments(baseline: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Merge baseline segments much shorter than the line is high.

    Annotation tools leave hooks of a few pixels at baseline ends; a warp following such a segment's
    direction twists the whole end of the line, where kraken's bevelled envelope absorbs it.
    """
    span = polygon.max(axis=0) - polygon.min(axis=0)
    threshold = max(MIN_BASELINE_LENGTH, 0.25 * float(span.min()))
    pts = [p for p in baseline]
    while len(pts) > 2:
        lengths = [float(np.linalg.norm(b - a)) for a, b in zip(pts, pts[1:])]
        k = int(np.argmin(lengths))
        if lengths[k] >= threshold:
            break
        # A short end segment is a hook: drop its outer point and keep the line's main direction.
        if k == 0:
            del pts[0]
        elif k == len(pts) - 2:
            del pts[-1]
        else:
            pts[k : k + 2] = [(pts[k] + pts[k + 1]) / 2]
    return np.array(pts)


def _project(points: np.ndarray, baseline: np.ndarray, extend_ends: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arc position along the baseline, signed distance (positive = below) and segment of each point."""
    starts = baseline[:-1]
    seg = np.diff(baseline, axis=0)
    lengths = np.linalg.norm(seg, axis=1)
    unit = seg / lengths[:, None]
    normal = np.stack([-unit[:, 1], unit[:, 0]], axis=1)
    rel = points[:, None, :] - starts[None, :, :]
    t = np.einsum("pkc,kc->pk", rel, unit)
    lo = np.zeros_like(lengths)
    hi = lengths.copy()
    if extend_ends:
        # Points before the first or after the last vertex are measured along the end segments' lines.
        lo[0] = -np.inf
        hi[-1] = np.inf
    tc = np.clip(t, lo, hi)
    foot = starts[None] + tc[..., None] * unit[None]
    dist = np.linalg.norm(points[:, None, :] - foot, axis=2)
    best = dist.argmin(axis=1)
    rows = np.arange(len(points))
    cum = np.concatenate([[0.0], np.cumsum(lengths)])
    arc = cum[best] + tc[rows, best]
    side = np.einsum("pc,pc->p", rel[rows, best], normal[best])
    return arc, side, best


def _mesh_line(patch: Image.Image, baseline: np.ndarray, polygon: np.ndarray, resample: int) -> Image.Image:
    seg = np.diff(baseline, axis=0)
    lengths = np.linalg.norm(seg, axis=1)
    unit = seg / lengths[:, None]
    normals = np.stack([-unit[:, 1], unit[:, 0]], axis=1)
    cum = np.concatenate([[0.0], np.cumsum(lengths)])
    arc, side, _ = _project(polygon, baseline, extend_ends=True)
    above = max(0.0, float(-side.min()))
    below = max(0.0, float(side.max()))
    start = min(0.0, float(arc.min()))
    end = max(float(cum[-1]), float(arc.max()))
    height = max(1, int(math.ceil(above + below)) + 1)
    width = max(1, int(math.ceil(end - start)) + 1)

    # Columns of the output grid: both ends, and one at every baseline vertex (the joints).
    columns = [(0, baseline[0] + unit[0] * start, normals[0])]
    for k in range(1, len(baseline) - 1):
        x = int(round(cum[k] - start))
        miter = normals[k - 1] + normals[k]
        norm = np.linalg.norm(miter)
        if norm < 1e-6:
            miter = normals[k]
        else:
            miter = miter / norm
            miter = miter * min(_MAX_MITER, 1.0 / max(float(miter @ normals[k]), 1e-6))
        # The vertex is moved to where the rounded column lies on the baseline, so no column is off by a pixel.
        shift = (x + start) - cum[k]
        seg_k = k if shift >= 0 else k - 1
        point = baseline[k] + unit[seg_k] * shift
        if columns[-1][0] < x < width:
            columns.append((x, point, miter))
    columns.append((width, baseline[-1] + unit[-1] * (start + width - cum[-1]), normals[-1]))

    mesh = []
    for (xa, pa, na), (xb, pb, nb) in zip(columns, columns[1:]):
        ul = pa - na * above
        ll = pa + na * (height - above)
        lr = pb + nb * (height - above)
        ur = pb - nb * above
        mesh.append(((xa, 0, xb, height), (*ul, *ll, *lr, *ur)))
    return patch.transform((width, height), Image.Transform.MESH, mesh, resample=resample, fillcolor=0)
