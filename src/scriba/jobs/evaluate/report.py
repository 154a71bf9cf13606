"""The ``ketos test`` report as text (kraken's layout) and JSON.

The text layout is kraken's, tab-separated and in the same order, so that scripts written against kraken's
output keep working: header, totals, accuracies, edit operations, a per-script table and a confusion table.
Two deliberate differences: the header names the model (kraken's stays blank) and explicit CER/WER lines
follow the accuracies. Characters are not HTML-escaped in this plain-text output (kraken's template engine
does that by accident). Notes about skipped lines and characters the model cannot produce come last.
"""

from __future__ import annotations

import json
import os
import unicodedata
import uuid
from pathlib import Path
from typing import Any

from scriba.jobs.evaluate.result import EvaluationResult

__all__ = ["printable", "render_text", "to_json", "write_json", "write_text_atomic"]


def printable(char: str) -> str:
    """``char`` as a reader can see it: combining marks and spaces by name, control characters in hex."""
    if not char:
        return ""
    if len(char) > 1:
        return "".join(printable(c) if unicodedata.category(c)[0] == "C" else c for c in char)
    cat = unicodedata.category(char)
    if cat[0] == "C":  # controls (tab and newline included) have no Unicode name
        return f"0x{ord(char):x}"
    if cat in ("Mn", "Mc", "Me") or cat[0] == "Z" or char.isspace():
        return unicodedata.name(char, f"U+{ord(char):04X}")
    return char


def _pct(x: float) -> str:
    return f"{100.0 * x:0.2f}%"


def render_text(result: EvaluationResult) -> str:
    """The report printed by ``ketos test``."""
    t = result.tally
    out = [
        f"=== report {result.name} ===",
        "",
        f"{t.chars}\tCharacters",
        f"{t.errors}\tErrors",
        f"{_pct(t.char_accuracy)}\tCharacter Accuracy",
        f"{_pct(t.case_insensitive_accuracy)}\tCharacter Accuracy (Case-insensitive)",
        f"{_pct(t.word_accuracy)}\tWord Accuracy",
        f"{_pct(t.cer)}\tCharacter Error Rate (CER)",
        f"{_pct(t.wer)}\tWord Error Rate (WER)",
        "",
        f"{t.insertions}\tInsertions",
        f"{t.deletions}\tDeletions",
        f"{t.substitutions}\tSubstitutions",
        "",
        "Count\tMissed\t%Right",
    ]
    for row in t.scripts():
        out.append(f"{row.count}\t{row.errors}\t{_pct(row.accuracy)}\t{row.script}")
    out += ["", "Errors\tCorrect-Generated"]
    for (ref, pred), n in t.top_confusions():
        out.append(f"{n}\t{{ {printable(ref)} }} - {{ {printable(pred)} }}")
    notes = result.notes()
    if notes:
        out.append("")
        out.extend(f"Note: {n}" for n in notes)
    return "\n".join(out) + "\n"


def to_json(result: EvaluationResult) -> dict[str, Any]:
    """The same numbers as the text report, plus settings, timing and per-line results."""
    t = result.tally
    return {
        "model": result.model,
        "name": result.name,
        "settings": result.settings,
        "summary": t.summary(),
        "scripts": [
            {"script": r.script, "count": r.count, "errors": r.errors, "accuracy": r.accuracy} for r in t.scripts()
        ],
        "confusions": [{"reference": ref, "prediction": pred, "count": n} for (ref, pred), n in t.top_confusions()],
        "unencodable": dict(sorted(result.unencodable.items(), key=lambda kv: (-kv[1], kv[0]))),
        "unencodable_lines": result.unencodable_lines,
        "skipped": [str(s) for s in result.skipped],
        "timing": {"seconds": result.seconds, "lines_per_second": result.lines_per_second},
        "lines": [r.to_dict() for r in t.lines],
    }


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it, so no half-written report remains."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A unique name opened with 'x' (not mkstemp, whose 0600 mode would survive the rename).
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(result: EvaluationResult, path: str | os.PathLike[str]) -> None:
    write_text_atomic(path, json.dumps(to_json(result), ensure_ascii=False, indent=1) + "\n")
