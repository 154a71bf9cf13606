"""Recognition metrics: the one place where references and predictions are compared.

Validation during training and ``ketos test`` both feed a :class:`Tally`, so the two can never disagree.
Rates are corpus-level, as kraken's (torchmetrics') CER/WER: the sum of edit distances over all lines divided
by the total reference length, not a mean of per-line rates. Words are whitespace-separated tokens and the
word error is the edit distance between token sequences.

Edit distances and alignments come from rapidfuzz (C++); Python only walks the opcodes of lines that have
errors, to count insertions/deletions/substitutions and the confusion pairs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz.distance import Levenshtein

from scriba.scripts import script

__all__ = ["LineResult", "ScriptRow", "Tally", "prediction_normalizer"]


def prediction_normalizer(normalization: str | None, normalize_whitespace: bool = True) -> Callable[[str], str]:
    """What ``ketos test`` applies to decoded text before comparing it: ``-u`` and whitespace, no bidi.

    Predictions are in display order already; references get the full text transform in the dataset.
    Validation during training must use this too, or its accuracy would drift from ``ketos test``'s
    (e.g. a trailing space in a prediction counts as an error in one and not the other).
    """
    from scriba.text import TextTransform

    return TextTransform(normalization=normalization, normalize_whitespace=normalize_whitespace, bidi_reordering=False)


# the integer counts of a Tally: what merging tallies, or summing them over DDP processes, adds up
COUNTS = (
    "lines_seen",
    "chars",
    "errors",
    "ci_chars",
    "ci_errors",
    "words",
    "word_errors",
    "insertions",
    "deletions",
    "substitutions",
)


# the headline figures of Tally.summary after the line count, in the order reports show them
_SUMMARY = (
    "chars", "errors", "cer", "wer", "char_accuracy", "case_insensitive_accuracy", "word_accuracy", "words",
    "word_errors", "insertions", "deletions", "substitutions",
)


@dataclass(slots=True)
class LineResult:
    """One evaluated line. ``index`` is its position in the evaluated data (to fetch its image later)."""

    id: str
    reference: str
    prediction: str
    distance: int
    source: str | None = None
    index: int | None = None

    @property
    def chars(self) -> int:
        return len(self.reference)

    @property
    def cer(self) -> float:
        return _rate(self.distance, len(self.reference))

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("id", "source", "reference", "prediction", "distance", "chars", "cer")}


@dataclass(frozen=True, slots=True)
class ScriptRow:
    """Per-script figures: reference characters of the script and how many of them were missed."""

    script: str
    count: int
    errors: int

    @property
    def accuracy(self) -> float:
        return (self.count - self.errors) / self.count if self.count else 0.0


def _rate(errors: int, total: int) -> float:
    # An empty reference has no defined rate; count each spurious character as one full error instead of
    # dividing by zero, so that accuracy stays a finite number in reports and checkpoint names.
    return errors / total if total else float(errors)


@dataclass
class Tally:
    """Accumulates edit statistics over lines; ``merge`` combines tallies from batches or workers."""

    keep_lines: bool = True
    lines_seen: int = 0
    chars: int = 0
    errors: int = 0
    ci_chars: int = 0
    ci_errors: int = 0
    words: int = 0
    word_errors: int = 0
    insertions: int = 0
    deletions: int = 0
    substitutions: int = 0
    char_counts: Counter[str] = field(default_factory=Counter)
    missed: Counter[str] = field(default_factory=Counter)
    confusions: Counter[tuple[str, str]] = field(default_factory=Counter)
    lines: list[LineResult] = field(default_factory=list)

    def add(
        self,
        reference: str,
        prediction: str,
        id: str | None = None,
        source: str | None = None,
        index: int | None = None,
    ) -> int:
        """Count one line; returns its edit distance."""
        self.lines_seen += 1
        n = len(reference)
        self.chars += n
        self.char_counts.update(reference)
        if reference == prediction:
            dist = 0
            self.ci_chars += len(reference.lower())
            nw = len(reference.split())
            self.words += nw
        else:
            dist = self._align(reference, prediction)
            ref_l = reference.lower()
            self.ci_chars += len(ref_l)
            self.ci_errors += Levenshtein.distance(ref_l, prediction.lower())
            ref_w = reference.split()
            self.words += len(ref_w)
            self.word_errors += Levenshtein.distance(ref_w, prediction.split())
        self.errors += dist
        if self.keep_lines:
            line_id = id if id is not None else str(self.lines_seen - 1)
            self.lines.append(LineResult(line_id, reference, prediction, dist, source, index))
        return dist

    def update(
        self,
        references: Sequence[str],
        predictions: Sequence[str],
        ids: Sequence[str] | None = None,
        sources: Sequence[str | None] | None = None,
        indices: Sequence[int] | None = None,
    ) -> None:
        """Count a batch of lines."""
        if len(references) != len(predictions):
            raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
        for i, (ref, pred) in enumerate(zip(references, predictions)):
            self.add(
                ref,
                pred,
                None if ids is None else ids[i],
                None if sources is None else sources[i],
                None if indices is None else indices[i],
            )

    def _align(self, ref: str, pred: str) -> int:
        dist = 0
        confusions = self.confusions
        missed = self.missed
        for op in Levenshtein.opcodes(ref, pred):
            tag, i1, i2, j1, j2 = op.tag, op.src_start, op.src_end, op.dest_start, op.dest_end
            if tag == "equal":
                continue
            if tag == "replace":
                n = i2 - i1
                self.substitutions += n
                missed.update(ref[i1:i2])
                confusions.update(zip(ref[i1:i2], pred[j1:j2]))
            elif tag == "delete":
                n = i2 - i1
                self.deletions += n
                missed.update(ref[i1:i2])
                confusions.update((c, "") for c in ref[i1:i2])
            else:  # insert
                n = j2 - j1
                self.insertions += n
                confusions.update(("", c) for c in pred[j1:j2])
            dist += n
        return dist

    # -- rates ---------------------------------------------------------------------------------------------
    @property
    def cer(self) -> float:
        return _rate(self.errors, self.chars)

    @property
    def wer(self) -> float:
        return _rate(self.word_errors, self.words)

    @property
    def ci_cer(self) -> float:
        return _rate(self.ci_errors, self.ci_chars)

    @property
    def char_accuracy(self) -> float:
        return 1.0 - self.cer

    @property
    def word_accuracy(self) -> float:
        return 1.0 - self.wer

    @property
    def case_insensitive_accuracy(self) -> float:
        return 1.0 - self.ci_cer

    # -- breakdowns ----------------------------------------------------------------------------------------
    def scripts(self) -> list[ScriptRow]:
        """Per-script rows, best accuracy first (ties by count, then name, for a stable report)."""
        counts: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for char, n in self.char_counts.items():
            counts[script(char)] += n
        for char, n in self.missed.items():
            errors[script(char)] += n
        rows = [ScriptRow(s, counts[s], errors[s]) for s in counts]
        rows.sort(key=lambda r: (-r.accuracy, -r.count, r.script))
        return rows

    def top_confusions(self, n: int | None = None) -> list[tuple[tuple[str, str], int]]:
        """Confusion pairs ``((reference, prediction), count)``, most frequent first; '' marks a gap."""
        items = sorted(self.confusions.items(), key=lambda kv: (-kv[1], kv[0]))
        return items if n is None else items[:n]

    def worst_lines(self, n: int = 20) -> list[LineResult]:
        """Lines with the most errors (by edit distance, then CER), as a transcriber would review them."""
        bad = [r for r in self.lines if r.distance]
        bad.sort(key=lambda r: (-r.distance, -r.cer, r.id))
        return bad[:n]

    # -- combining -----------------------------------------------------------------------------------------
    def merge(self, other: Tally) -> Tally:
        """Add ``other``'s counts to this tally (in place) and return it."""
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.char_counts.update(other.char_counts)
        self.missed.update(other.missed)
        self.confusions.update(other.confusions)
        if self.keep_lines:
            self.lines.extend(other.lines)
        return self

    @classmethod
    def combine(cls, tallies: Iterable[Tally]) -> Tally:
        out = cls()
        for t in tallies:
            out.merge(t)
        return out

    def summary(self) -> dict[str, Any]:
        """The headline numbers as plain types (JSON, checkpoint metadata, logs)."""
        return {"lines": self.lines_seen, **{k: getattr(self, k) for k in _SUMMARY}}
