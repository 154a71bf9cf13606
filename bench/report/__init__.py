"""bench/RESULTS.md from a run's records: the summary against the acceptance goals, then a table per section."""

from __future__ import annotations

from pathlib import Path

from bench.report.document import render
from bench.report.results import Results

__all__ = ["Results", "render", "write_results"]


def write_results(res: Results, path: Path) -> None:
    """Writes the report to a temporary name beside ``path``, then renames it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(res), encoding="utf-8")
    tmp.replace(path)
    print(f"wrote {path}", flush=True)
