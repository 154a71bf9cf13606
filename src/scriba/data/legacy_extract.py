"""Baseline line images the way kraken's legacy extractor cuts them (``legacy_polygons``).

Older kraken baseline models were trained on these images, so fine-tuning or testing them needs the same
input. The facts reproduced here (from kraken 7.1.1's ``extract_polygons(..., legacy=True)``):

* Straight (2-point) baselines: the polygon's bounding box is cropped, pixels outside the polygon set to 0,
  and the patch rotated by the baseline's angle with **nearest-neighbour** sampling (whatever the page mode).
  On single-channel pages the rotation loses its translation (kraken hands a homogeneous 3x3 matrix without
  its offset to ``scipy.ndimage.affine_transform``), so the part of the line rotated to negative coordinates
  is cut off; on RGB pages the whole rotated patch is kept.
* Curved baselines: the polygon is simplified (Douglas-Peucker, tolerance 2) when it has more than 50 points,
  then subdivided once with a quadratic B-spline (closed polygons stay closed, open ones keep their ends).
  Every polygon point is moved to (arc length along the baseline, signed distance to its nearest baseline
  segment), the baseline to (arc length, 0); a piecewise-affine warp over the Delaunay triangulation of the
  moved points, sampled bilinearly (nearest for bitonal pages), gives the line. The mask is the subdivided
  polygon. Points outside the triangulation are 0, and so is any sample not inside the patch.

Samples follow ``scipy.ndimage``'s ``constant`` mode: a coordinate outside ``[0, size - 1]`` reads 0 and
nearest rounds halves up; values are truncated to ``uint8``. Straight lines are bit-identical to kraken's.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

_SIMPLIFY_ABOVE = 50  # polygon points above which the polygon is simplified first
_SIMPLIFY_TOLERANCE = 2.0


def legacy_line(page: Image.Image, polygon: np.ndarray, baseline: np.ndarray, nearest: bool) -> Image.Image:
    """The uncropped legacy line image of a page in mode 'L' or 'RGB'.

    ``nearest``: the page was bitonal, so curved lines are sampled with nearest neighbour, as kraken does.
    """
    # Integer truncation of the extremes, as kraken does (coordinates are validated non-negative).
    x0, y0 = int(polygon[:, 0].min()), int(polygon[:, 1].min())
    x1, y1 = int(polygon[:, 0].max()), int(polygon[:, 1].max())
    patch = np.array(page.crop((x0, y0, x1 + 1, y1 + 1)))
    origin = np.array([x0, y0], dtype=np.float64)
    if len(baseline) == 2:
        _mask(patch, polygon - origin)
        return Image.fromarray(_rotated(patch, baseline))
    if len(polygon) > _SIMPLIFY_ABOVE:
        polygon = _simplify(polygon, _SIMPLIFY_TOLERANCE)
    polygon = _subdivide(polygon)
    _mask(patch, polygon - origin)
    return Image.fromarray(_warped(patch, polygon, baseline, origin, nearest))


def _mask(patch: np.ndarray, polygon: np.ndarray) -> None:
    """Zero every pixel of ``patch`` outside ``polygon`` (drawn filled, with a 1 px outline)."""
    mask = Image.new("L", (patch.shape[1], patch.shape[0]), 0)
    ImageDraw.Draw(mask).polygon(polygon.flatten().tolist(), outline=1, fill=1)
    patch[~np.asarray(mask, dtype=bool)] = 0


def _rotated(patch: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    d = np.diff(baseline.T)
    lengths = np.linalg.norm(d, axis=0)
    # The direction is normalised through the same steps as kraken's (the angle's last bits set the
    # nearest-neighbour choice on ties).
    p_dir = np.mean(d * lengths / lengths.sum(), axis=1)
    p_dir = p_dir / np.sqrt(np.sum(p_dir**2))
    angle = float(np.arctan2(p_dir[1], p_dir[0]))
    cos, sin = math.cos(angle), math.sin(angle)
    rot = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    rows, cols = patch.shape[:2]
    # Same array shapes as kraken's (skimage's) products, so that BLAS rounds them alike.
    corners = np.array([[0, 0, 1], [0, rows - 1, 1], [cols - 1, rows - 1, 1], [cols - 1, 0, 1]], dtype=np.float64)
    corners = corners @ np.linalg.inv(rot).T
    corners = corners[:, :2] / corners[:, 2:]
    (minc, minr), (maxc, maxr) = corners.min(axis=0), corners.max(axis=0)
    out_h, out_w = (int(v) for v in np.around((maxr - minr + 1, maxc - minc + 1)))
    tx, ty = (np.array([[minc, minr, 1.0]]) @ rot.T)[0, :2]
    if patch.ndim == 2:
        tx = ty = 0.0  # kraken's translation is lost on single-channel images
    r = np.arange(out_h, dtype=np.float64)[:, None]
    c = np.arange(out_w, dtype=np.float64)[None, :]
    src_r = cos * r + sin * c + ty
    src_c = -sin * r + cos * c + tx
    return _sample(patch, src_c, src_r, nearest=True)


def _simplify(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker: points whose foot lies inside the chord are measured to it, others to its nearer end."""
    keep = np.zeros(len(points), dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        a, b = stack.pop()
        if b <= a + 1:
            continue
        (ax, ay), (bx, by) = points[a], points[b]
        dx, dy = bx - ax, by - ay
        mid = points[a + 1 : b]
        to_a, to_b = mid - points[a], mid - points[b]
        inside = (to_a[:, 0] * dx + to_a[:, 1] * dy > 0) & (-to_b[:, 0] * dx - to_b[:, 1] * dy > 0)
        theta = -math.atan2(dx, dy)
        chord = ay * math.sin(theta) + ax * math.cos(theta)
        perp = np.abs(mid[:, 0] * math.cos(theta) + mid[:, 1] * math.sin(theta) - chord)
        ends = np.minimum(np.sqrt(to_a[:, 1] ** 2 + to_a[:, 0] ** 2), np.sqrt(to_b[:, 1] ** 2 + to_b[:, 0] ** 2))
        dist = np.where(inside, perp, ends)
        if (dist > tolerance).any():
            k = a + 1 + int(dist.argmax())
            keep[k] = True
            stack += [(k, b), (a, k)]
    return points[keep]


def _subdivide(points: np.ndarray) -> np.ndarray:
    """One quadratic B-spline (Chaikin) step: two points at 1/4 and 3/4 of every edge.

    A closed polygon (first point repeated at the end) gets its closing edge cut too and stays closed; an
    open one keeps both its end points.
    """
    if len(points) < 2:
        return points
    closed = bool((points[0] == points[-1]).all())
    if closed:
        b = points[:-1]
        a = np.roll(b, 1, axis=0)
    else:
        a, b = points[:-1], points[1:]
    cut = np.empty((2 * len(a), 2))
    cut[0::2] = 0.75 * a + 0.25 * b
    cut[1::2] = 0.25 * a + 0.75 * b
    if closed:
        return np.concatenate([cut, cut[:1]])
    return np.concatenate([points[:1], cut, points[-1:]])


def _rectify(points: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """(arc length along the baseline, signed distance) of each point, measured to its nearest segment."""
    p0, p1 = baseline[:-1], baseline[1:]
    d = p1 - p0
    len2 = d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]
    length = np.sqrt(len2)
    rel = points[:, None, :] - p0[None]
    r = (rel[..., 0] * d[:, 0] + rel[..., 1] * d[:, 1]) / len2
    along = np.where(r <= 0, 0.0, np.where(r <= 1, r * length, length))
    # The foot is the segment's end point itself when clamped, so a point nearest to a shared vertex is
    # exactly as far from both segments and the first one wins.
    frac = (along / length)[..., None]
    foot = np.where((r <= 0)[..., None], p0[None], np.where((r >= 1)[..., None], p1[None], p0[None] + frac * d[None]))
    off = points[:, None, :] - foot
    dist = np.sqrt(off[..., 0] * off[..., 0] + off[..., 1] * off[..., 1])
    k = dist.argmin(axis=1)
    rows = np.arange(len(points))
    cum = np.cumsum(np.concatenate([[0.0], length]))
    side = np.sign(d[k, 0] * rel[rows, k, 1] - rel[rows, k, 0] * d[k, 1])
    return np.stack([cum[k] + along[rows, k], side * dist[rows, k]], axis=1)


def _warped(patch: np.ndarray, polygon: np.ndarray, baseline: np.ndarray, origin: np.ndarray, nearest: bool) -> np.ndarray:
    rect = _rectify(polygon, baseline)
    seg = np.diff(baseline, axis=0)
    cum = np.cumsum(np.concatenate([[0.0], np.sqrt(seg[:, 0] * seg[:, 0] + seg[:, 1] * seg[:, 1])]))
    pol_dst = baseline[0] + rect
    bl_dst = baseline[0] + np.stack([cum, np.zeros_like(cum)], axis=1)
    # The output box is the moved polygon's (baseline points outside it are left out), truncated to ints.
    cx0, ry0 = int(pol_dst[:, 0].min()), int(pol_dst[:, 1].min())
    cx1, ry1 = int(pol_dst[:, 0].max()), int(pol_dst[:, 1].max())
    out_h, out_w = ry1 - ry0 + 1, cx1 - cx0 + 1
    shift = np.array([cx0, ry0], dtype=np.float64)
    src = np.concatenate([baseline - origin, polygon - origin])
    dst = np.concatenate([bl_dst - shift, pol_dst - shift])
    # A point given twice is one vertex of the triangulation; its first occurrence is kept.
    _, first = np.unique(dst, axis=0, return_index=True)
    first = np.sort(first)
    src, dst = src[first], dst[first]

    image = patch.astype(np.float64)
    sx = np.full((out_h, out_w), -1.0)
    sy = np.full((out_h, out_w), -1.0)
    for tri in _delaunay(dst):
        d, s = dst[tri], src[tri]
        mat = np.array([[d[1, 0] - d[0, 0], d[2, 0] - d[0, 0]], [d[1, 1] - d[0, 1], d[2, 1] - d[0, 1]]])
        det = mat[0, 0] * mat[1, 1] - mat[0, 1] * mat[1, 0]
        if abs(det) < 1e-9:
            continue
        inv = np.array([[mat[1, 1], -mat[0, 1]], [-mat[1, 0], mat[0, 0]]]) / det
        xa, ya = np.floor(d.min(axis=0)).astype(int)
        xb, yb = np.ceil(d.max(axis=0)).astype(int)
        xa, ya, xb, yb = max(xa, 0), max(ya, 0), min(xb, out_w - 1), min(yb, out_h - 1)
        if xb < xa or yb < ya:
            continue
        gy, gx = np.mgrid[ya : yb + 1, xa : xb + 1]
        u = inv[0, 0] * (gx - d[0, 0]) + inv[0, 1] * (gy - d[0, 1])
        v = inv[1, 0] * (gx - d[0, 0]) + inv[1, 1] * (gy - d[0, 1])
        inside = (u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9)
        u, v, gy, gx = u[inside], v[inside], gy[inside], gx[inside]
        sx[gy, gx] = s[0, 0] + u * (s[1, 0] - s[0, 0]) + v * (s[2, 0] - s[0, 0])
        sy[gy, gx] = s[0, 1] + u * (s[1, 1] - s[0, 1]) + v * (s[2, 1] - s[0, 1])
    out = _sample(image, sx, sy, nearest)
    out = np.clip(out, image.min(initial=0.0), image.max(initial=0.0))
    return out.astype(np.uint8)


def _delaunay(points: np.ndarray) -> np.ndarray:
    """Delaunay triangulation (Bowyer-Watson); (T, 3) vertex indices into ``points``, counter-clockwise.

    The outside is covered by "ghost" triangles (hull edge + a vertex at infinity) instead of a finite
    super-triangle: a super-triangle's vertex falls inside the huge circumcircles of the thin triangles
    along a long, nearly straight polygon side, and those triangles would be missing from the hull.
    """
    n = len(points)
    ghost = n
    orient = _orientation
    third = next((k for k in range(2, n) if orient(points[0], points[1], points[k]) != 0), None)
    if third is None:
        return np.zeros((0, 3), dtype=np.int64)
    a, b, c = (0, 1, third) if orient(points[0], points[1], points[third]) > 0 else (1, 0, third)
    # Ghost (u, v, ghost): the hull edge u -> v, the outside on its left.
    tris = np.array([[a, b, c], [b, a, ghost], [c, b, ghost], [a, c, ghost]], dtype=np.int64)
    pts = np.concatenate([points, [[0.0, 0.0]]])
    for i in [k for k in range(2, n) if k != third]:
        p = pts[i]
        real = tris[:, 2] != ghost
        u, v, w = pts[tris[:, 0]], pts[tris[:, 1]], pts[tris[:, 2]]
        ud, vd, wd = u - p, v - p, w - p
        incircle = (
            (ud[:, 0] ** 2 + ud[:, 1] ** 2) * (vd[:, 0] * wd[:, 1] - wd[:, 0] * vd[:, 1])
            - (vd[:, 0] ** 2 + vd[:, 1] ** 2) * (ud[:, 0] * wd[:, 1] - wd[:, 0] * ud[:, 1])
            + (wd[:, 0] ** 2 + wd[:, 1] ** 2) * (ud[:, 0] * vd[:, 1] - vd[:, 0] * ud[:, 1])
        )
        side = (v[:, 0] - u[:, 0]) * (p[1] - u[:, 1]) - (v[:, 1] - u[:, 1]) * (p[0] - u[:, 0])
        # On a hull edge's line, only a point between its ends is inside the ghost's "circle".
        between = (side == 0) & (((p - u) * (p - v)).sum(axis=1) < 0)
        bad = np.where(real, incircle > 0, (side > 0) | between)
        directed = {(int(e0), int(e1)) for t in tris[bad] for e0, e1 in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
        boundary = [e for e in directed if (e[1], e[0]) not in directed]
        new = []
        for x, y in boundary:
            # (x, y, i) counter-clockwise; a ghost keeps its vertex at infinity last, in the same cyclic order.
            new.append((i, x, y) if y == ghost else (y, i, x) if x == ghost else (x, y, i))
        tris = np.concatenate([tris[~bad], np.array(new, dtype=np.int64).reshape(-1, 3)])
    return tris[(tris != ghost).all(axis=1)]


def _orientation(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))


def _sample(image: np.ndarray, sx: np.ndarray, sy: np.ndarray, nearest: bool) -> np.ndarray:
    """Values at fractional (x, y) positions, pixel centres on integers; 0 outside ``[0, size - 1]``."""
    h, w = image.shape[:2]
    ok = (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)
    # Positions outside read an extra zero pixel appended after the image's last one.
    flat = np.concatenate([image.reshape(h * w, -1), np.zeros((1, image.size // (h * w)), image.dtype)])
    if nearest:
        xi, yi = np.floor(sx + 0.5).astype(np.int64), np.floor(sy + 0.5).astype(np.int64)
        out = flat[np.where(ok, yi * w + xi, h * w)]
        return out.reshape(sx.shape + image.shape[2:])
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    # The right and bottom neighbours of the last column and row have weight 0.
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    none = h * w
    # Summed in scipy.ndimage's order (row weight first, then column), so that truncation to uint8 agrees.
    acc = flat[np.where(ok, y0 * w + x0, none)] * (1 - fy) * (1 - fx)
    acc = acc + flat[np.where(ok, y0 * w + x1, none)] * (1 - fy) * fx
    acc = acc + flat[np.where(ok, y1 * w + x0, none)] * fy * (1 - fx)
    acc = acc + flat[np.where(ok, y1 * w + x1, none)] * fy * fx
    return acc.reshape(sx.shape + image.shape[2:])
