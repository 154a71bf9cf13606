"""The unit every data source produces: one text line, before its image is extracted."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LineRecord:
    """One line of ground truth.

    ``source`` is the file the line came from (XML page, ``.gt.txt``/image pair, or ``.arrow`` dataset) and
    ``id`` names the line inside it (XML id, image path, or row number), so that every warning can say
    where a problem is. Exactly one way to get pixels is set: ``image`` + geometry (a page region or, for
    the ``path`` format, the whole image) or ``image_bytes`` (an already extracted PNG from a dataset).
    """

    id: str
    source: str
    text: str
    image: str | None = None
    kind: str = "bbox"  # 'baselines' or 'bbox'
    baseline: list[tuple[float, float]] | None = None
    boundary: list[tuple[float, float]] | None = None
    bbox: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1; None = the whole image
    language: list[str] | None = None
    base_dir: str | None = None  # 'L', 'R' or None (unknown)
    vertical: bool = False
    image_bytes: bytes | None = None
    split: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


def polygon_area(points: list[tuple[float, float]]) -> float:
    """The area a line's polygon encloses (shoelace formula; 0 for collinear or repeated points)."""
    n = len(points)
    twice = sum(points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0] * points[i][1] for i in range(n))
    return abs(twice) / 2


@dataclass
class SkippedItem:
    """An item left out of a dataset, with why: every skip is counted and reported."""

    source: str
    element: str | None
    reason: str

    def __str__(self) -> str:
        # the path once: path-format lines are named by their file, and a reason carried over from an error
        # message may already name the file (and its line or element)
        same = self.element is None or self.element == self.source
        where = self.source if same else f"{self.source} ({self.element})"
        reason = self.reason
        if reason.startswith(f"{where}: ") or (same and reason.startswith(f"{self.source} (")):
            return reason
        if reason.startswith(f"{self.source}: "):
            reason = reason[len(self.source) + 2 :]
        return f"{where}: {reason}"
