"""bench/RESULTS.md from a run's records: the summary against the acceptance goals, then a table per section."""

from __future__ import annotations

from pathlib import Path

from bench.report.document import render
from bench.report.results import Results

__all__ = ["HAND_MEASURED", "Results", "render", "write_results"]

# Sections below this line are measured by scripts of their own (bench/legacy_polygons.py, bench/ddp.py,
# bench/lm_decoding.py, ...) and written by hand: a new report keeps them.
HAND_MEASURED = "<!-- hand-measured sections below: bench/run.py keeps them as they are -->"


def write_results(res: Results, path: Path) -> None:
    """Writes the report to a temporary name beside ``path``, then renames it; the hand-measured sections of
    the file it replaces (from :data:`HAND_MEASURED` on) are kept."""
    kept = ""
    if path.exists():
        old = path.read_text(encoding="utf-8")
        if HAND_MEASURED in old:
            kept = "\n" + old[old.index(HAND_MEASURED):]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(res) + kept, encoding="utf-8")
    tmp.replace(path)
    print(f"wrote {path}", flush=True)
