"""What the report is rendered from: a run's records and the settings they were made with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.figures import select
from bench.machine import recorded_flags
from bench.records import Record
from bench.settings import DATA, ROOT, Settings


@dataclass
class Results:
    """The records of one ``results.json`` (in run order) and the settings that describe them.

    ``root`` is stripped from the commands shown; ``data`` is the data folder the run read.
    """

    records: list[Record]
    settings: Settings
    tag: str
    data: Path = field(default=DATA)
    root: Path = field(default=ROOT)

    def by(self, section: str, **kw) -> list[Record]:
        return select(self.records, section, **kw)

    def machine_flags(self) -> str:
        return recorded_flags(self.records)

    @classmethod
    def recorded(cls, records: list[Record], fallback: Settings, tag: str) -> Results:
        """The results with the settings and data folder their latest run recorded (``fallback`` fills gaps)."""
        before = next((r for r in records if r.get("name") == "machine_before"), {})
        return cls(records, fallback.recorded(before), tag, Path(before.get("data", DATA)))
