"""Hand-computed cases for scriba.metrics.Tally and scriba.scripts."""

from __future__ import annotations

import pickle
import random

import pytest
from rapidfuzz.distance import Levenshtein

from scriba import scripts
from scriba.metrics import Tally


def test_perfect_line() -> None:
    t = Tally()
    assert t.add("abc", "abc") == 0
    assert (t.chars, t.errors, t.cer, t.char_accuracy) == (3, 0, 0.0, 1.0)
    assert (t.insertions, t.deletions, t.substitutions) == (0, 0, 0)
    assert t.words == 1 and t.word_errors == 0
    assert not t.confusions


def test_edit_operations_and_confusions() -> None:
    t = Tally()
    assert t.add("abcd", "abxd") == 1  # c -> x
    assert t.add("abc", "ac") == 1  # b deleted
    assert t.add("ac", "abc") == 1  # b inserted
    assert (t.substitutions, t.deletions, t.insertions) == (1, 1, 1)
    assert t.chars == 9 and t.errors == 3
    assert t.cer == pytest.approx(3 / 9)
    assert t.confusions == {("c", "x"): 1, ("b", ""): 1, ("", "b"): 1}
    # only reference characters that were deleted or substituted count as missed
    assert t.missed == {"c": 1, "b": 1}


def test_corpus_level_rates_are_not_means_of_line_rates() -> None:
    t = Tally()
    t.add("a", "b")  # line CER 1.0
    t.add("abcdefghij", "abcdefghij")  # line CER 0.0
    assert t.cer == pytest.approx(1 / 11)  # not (1.0 + 0.0) / 2


def test_wer_counts_word_edits() -> None:
    t = Tally()
    t.add("the cat sat", "the bat sat")  # one word substituted
    t.add("a b", "a b c")  # one word inserted
    t.add("x  y", "x y")  # whitespace runs split the same way
    assert (t.words, t.word_errors) == (7, 2)
    assert t.wer == pytest.approx(2 / 7)
    assert t.word_accuracy == pytest.approx(1 - 2 / 7)


def test_case_insensitive_accuracy() -> None:
    t = Tally()
    t.add("Hello World", "hello world")
    assert t.errors == 2
    assert t.char_accuracy == pytest.approx(1 - 2 / 11)
    assert t.case_insensitive_accuracy == 1.0
    t.add("ABC", "abd")
    assert t.ci_errors == 1
    assert t.case_insensitive_accuracy == pytest.approx(1 - 1 / 14)


def test_per_script_rows() -> None:
    t = Tally()
    t.add("abα", "ab")  # Greek alpha deleted
    t.add("e\u0301 ж", "e ж")  # combining acute deleted
    t.add("ж", "жж")  # an insertion is no miss of a reference character
    rows = {r.script: r for r in t.scripts()}
    assert (rows["Latin"].count, rows["Latin"].errors) == (3, 0)
    assert (rows["Greek"].count, rows["Greek"].errors, rows["Greek"].accuracy) == (1, 1, 0.0)
    assert (rows["Inherited"].count, rows["Inherited"].errors) == (1, 1)
    assert (rows["Cyrillic"].count, rows["Cyrillic"].errors) == (2, 0)
    assert (rows["Common"].count, rows["Common"].errors) == (1, 0)
    order = [r.script for r in t.scripts()]
    assert order.index("Latin") < order.index("Greek")  # best accuracy first


@pytest.mark.parametrize(
    ("char", "name"),
    [
        ("a", "Latin"),
        ("Z", "Latin"),
        ("é", "Latin"),
        ("ꝑ", "Latin"),
        ("ſ", "Latin"),
        ("ﬁ", "Latin"),
        (" ", "Common"),
        ("1", "Common"),
        (".", "Common"),
        ("⁊", "Common"),
        ("\u00d7", "Common"),
        ("\u0301", "Inherited"),
        ("\u0364", "Inherited"),
        ("\u200d", "Inherited"),
        ("α", "Greek"),
        ("ж", "Cyrillic"),
        ("א", "Hebrew"),
        ("ب", "Arabic"),
        ("،", "Common"),
        ("\u064e", "Inherited"),
        ("ܐ", "Syriac"),
        ("क", "Devanagari"),
        ("中", "Han"),
        ("あ", "Hiragana"),
        ("ア", "Katakana"),
        ("한", "Hangul"),
        ("ა", "Georgian"),
        ("Ա", "Armenian"),
        ("ก", "Thai"),
        ("\U000e01ef", "Inherited"),
        ("\U0010ffff", "Unknown"),
    ],
)
def test_script_table(char: str, name: str) -> None:
    assert scripts.script(char) == name


def test_script_table_is_sorted_and_disjoint() -> None:
    ranges = scripts._RANGES
    assert all(a <= b for a, b, _ in ranges)
    assert all(prev[1] < nxt[0] for prev, nxt in zip(ranges, ranges[1:]))


def test_empty_reference_counts_spurious_output() -> None:
    t = Tally()
    t.add("", "xy")
    assert t.chars == 0 and t.errors == 2 and t.insertions == 2
    assert t.cer == 2.0  # finite, no ZeroDivisionError
    assert Tally().cer == 0.0


def test_merge_equals_single_tally() -> None:
    rng = random.Random(3)
    pairs = [
        (
            "".join(rng.choice("abcé ώ") for _ in range(rng.randint(0, 15))),
            "".join(rng.choice("abcé ώ") for _ in range(rng.randint(0, 15))),
        )
        for _ in range(300)
    ]
    whole = Tally()
    for r, p in pairs:
        whole.add(r, p)
    parts = [Tally(), Tally(), Tally()]
    for i, (r, p) in enumerate(pairs):
        parts[i % 3].add(r, p)
    merged = Tally.combine(pickle.loads(pickle.dumps(p)) for p in parts)  # as from worker processes
    assert merged.summary() == whole.summary()
    assert merged.confusions == whole.confusions
    assert merged.scripts() == whole.scripts()
    assert len(merged.lines) == len(pairs)
    assert whole.errors == sum(Levenshtein.distance(r, p) for r, p in pairs)
    assert whole.insertions + whole.deletions + whole.substitutions == whole.errors


def test_per_line_results_and_worst_lines() -> None:
    t = Tally()
    t.update(["abc", "abcdef", "xyz"], ["abc", "abXdYf", "x"], ids=["l1", "l2", "l3"], indices=[0, 1, 2])
    assert [(r.id, r.distance, r.index) for r in t.lines] == [("l1", 0, 0), ("l2", 2, 1), ("l3", 2, 2)]
    assert [r.id for r in t.worst_lines(5)] == ["l3", "l2"]  # same distance: higher CER first
    assert t.lines[1].to_dict()["cer"] == pytest.approx(2 / 6)
    with pytest.raises(ValueError):
        t.update(["a"], [])


def test_keep_lines_off() -> None:
    t = Tally(keep_lines=False)
    t.add("ab", "b")
    assert t.errors == 1 and t.lines == [] and t.lines_seen == 1


def test_prediction_normalizer() -> None:
    from scriba.metrics import prediction_normalizer

    norm = prediction_normalizer("NFD", True)
    assert norm(" e\u0301\u00e9\u00a0 x ") == "e\u0301e\u0301  x"  # each space kept, ends stripped
    assert prediction_normalizer(None, False)(" \u00e9 ") == " \u00e9 "
    # no bidi reordering: predictions come out of the network in display order already
    assert norm("\u05d0\u05d1 ab") == "\u05d0\u05d1 ab"
