"""What ``ketos test`` found: the tally, the lines left out, and where the line images are (for the reports)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scriba.data.records import LineRecord, SkippedItem
from scriba.metrics import Tally

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["EvaluationResult"]

# How many skipped lines a note lists by name before it only counts them.
_NOTE_EXAMPLES = 5


@dataclass
class EvaluationResult:
    """Everything a report needs: the tally, what was left out, and where the line images are."""

    model: str
    name: str
    tally: Tally
    settings: dict[str, Any] = field(default_factory=dict)
    skipped: list[SkippedItem] = field(default_factory=list)
    unencodable: Counter[str] = field(default_factory=Counter)
    unencodable_lines: int = 0
    seconds: float = 0.0
    records: Sequence[LineRecord] = field(default_factory=list, repr=False)
    legacy_polygons: bool = False
    image_loader: Callable[[int], Image.Image] | None = field(default=None, repr=False)

    @property
    def lines_per_second(self) -> float:
        return self.tally.lines_seen / self.seconds if self.seconds > 0 else 0.0

    def notes(self) -> list[str]:
        """One line per kind of problem, each reported once, for the end of the text report."""
        out = []
        if self.skipped:
            shown = "; ".join(str(s) for s in self.skipped[:_NOTE_EXAMPLES])
            more = f" (and {len(self.skipped) - _NOTE_EXAMPLES} more)" if len(self.skipped) > _NOTE_EXAMPLES else ""
            out.append(f"{len(self.skipped)} line(s) left out: {shown}{more}")
        if self.unencodable:
            chars = ", ".join(
                f"{c!r} (U+{ord(c):04X}) x{n}" if len(c) == 1 else f"{c!r} x{n}"
                for c, n in sorted(self.unencodable.items(), key=lambda kv: (-kv[1], kv[0]))
            )
            out.append(
                f"{self.unencodable_lines} line(s) contain characters the model cannot produce, "
                f"counted as errors: {chars}"
            )
        return out

    def line_image(self, index: int) -> Image.Image:
        """The line image of the ``index``-th evaluated record (extracted again; nothing is kept in memory)."""
        if self.image_loader is not None:
            return self.image_loader(index)
        from scriba.data.extract import load_line_image

        return load_line_image(self.records[index], legacy_polygons=self.legacy_polygons)
