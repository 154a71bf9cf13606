"""Layout of the text report (kraken's) and content of the JSON report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scriba.data.records import SkippedItem
from scriba.jobs.evaluate.report import printable, render_text, to_json, write_json, write_text_atomic
from scriba.jobs.evaluate.result import EvaluationResult
from scriba.metrics import Tally

FIXTURE = Path(__file__).parents[2] / "fixtures" / "kraken_test_report.txt"


def _result() -> EvaluationResult:
    t = Tally()
    t.add("abcd", "abxd", id="l1")
    t.add("Ab c", "ab", id="l2")
    t.add("αβ", "αβ", id="l3")
    return EvaluationResult(model="/models/m.safetensors", name="m.safetensors", tally=t, seconds=2.0)


def _layout(lines: list[str]) -> list[str]:
    """Each line reduced to its shape: numbers -> N, labels kept (what a parser of kraken's output relies on)."""
    out = []
    for line in lines:
        if line.startswith("=== report"):
            out.append("HEADER")
        elif re.fullmatch(r"\d+\t\{ .* \} - \{ .* \}", line):
            out.append("CONFUSION")
        elif re.fullmatch(r"\d+\t\d+\t-?\d+\.\d\d%\t\S+", line):
            out.append("SCRIPT")
        else:
            out.append(re.sub(r"-?\d+(\.\d+)?", "N", line))
    return out


def test_text_layout() -> None:
    text = render_text(_result())
    lines = text.splitlines()
    assert lines[:15] == [
        "=== report m.safetensors ===",
        "",
        "10\tCharacters",
        "4\tErrors",
        "60.00%\tCharacter Accuracy",
        "70.00%\tCharacter Accuracy (Case-insensitive)",
        "25.00%\tWord Accuracy",
        "40.00%\tCharacter Error Rate (CER)",
        "75.00%\tWord Error Rate (WER)",
        "",
        "0\tInsertions",
        "2\tDeletions",
        "2\tSubstitutions",
        "",
        "Count\tMissed\t%Right",
    ]
    # scripts: best accuracy first
    assert lines[15:18] == ["2\t0\t100.00%\tGreek", "7\t3\t57.14%\tLatin", "1\t1\t0.00%\tCommon"]
    assert lines[18:20] == ["", "Errors\tCorrect-Generated"]
    confusions = lines[20:]
    assert "1\t{ c } - { x }" in confusions
    assert "1\t{ SPACE } - {  }" in confusions
    assert "1\t{ A } - { a }" in confusions
    assert text.endswith("\n")


def test_layout_matches_kraken_report() -> None:
    """Same blocks in the same order as kraken 7.1.1's `ketos test` output (fixture from bench/)."""
    if not FIXTURE.exists():
        pytest.skip(f"kraken reference report not found at {FIXTURE}")
    kraken = FIXTURE.read_text(encoding="utf-8").splitlines()
    kraken = kraken[next(i for i, line in enumerate(kraken) if line.startswith("=== report")) :]
    ours = render_text(_result()).splitlines()
    extra = {"N%\tCharacter Error Rate (CER)", "N%\tWord Error Rate (WER)"}

    def blocks(layout: list[str]) -> list[str]:
        # collapse table rows so that reports with different row counts compare
        out: list[str] = []
        for item in layout:
            if item in extra or (out and item in ("SCRIPT", "CONFUSION") and out[-1] == item):
                continue
            out.append(item)
        return [x for x in out if x]

    assert blocks(_layout(ours)) == blocks(_layout(kraken))


def test_printable() -> None:
    assert printable("a") == "a"
    assert printable("") == ""
    assert printable(" ") == "SPACE"
    assert printable("\u0301") == "COMBINING ACUTE ACCENT"
    assert printable("\t") == "0x9"
    assert printable("\x07") == "0x7"


def test_notes_for_skipped_and_unencodable() -> None:
    r = _result()
    r.skipped = [SkippedItem("a.png", None, "cannot open image")]
    r.unencodable.update({"ж": 3})
    r.unencodable_lines = 2
    text = render_text(r)
    tail = text.splitlines()[-2:]
    assert tail[0] == "Note: 1 line(s) left out: a.png: cannot open image"
    assert tail[1].startswith("Note: 2 line(s) contain characters the model cannot produce")
    assert "U+0436" in tail[1]


def test_json(tmp_path: Path) -> None:
    r = _result()
    out = tmp_path / "sub" / "report.json"
    write_json(r, out)
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["summary"]["chars"] == 10 and data["summary"]["errors"] == 4
    assert data["summary"]["cer"] == pytest.approx(4 / 10)
    assert data["name"] == "m.safetensors"
    assert [ln["id"] for ln in data["lines"]] == ["l1", "l2", "l3"]
    assert data["lines"][1] == {
        "id": "l2",
        "source": None,
        "reference": "Ab c",
        "prediction": "ab",
        "distance": 3,
        "chars": 4,
        "cer": 0.75,
    }
    assert {"reference": "c", "prediction": "x", "count": 1} in data["confusions"]
    assert data["timing"]["lines_per_second"] == pytest.approx(1.5)
    assert data == json.loads(json.dumps(to_json(r)))
    assert [p.name for p in out.parent.iterdir()] == ["report.json"]  # no temporary file left behind


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "r.txt"
    target.write_text("old")
    with pytest.raises(TypeError):
        write_text_atomic(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.txt"]
