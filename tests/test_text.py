"""Text transforms: kraken's order (normalization, whitespace, bidi) and bidi display order."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from scriba.errors import UsageError
from scriba.text import TextTransform, get_display, normalize_whitespace


def test_whitespace_is_unicode_white_space_then_stripped() -> None:
    assert normalize_whitespace("\t a\u00a0b\u2003c\u3000 \n") == "a b c"
    assert normalize_whitespace("a\r\nb") == "a  b"
    # U+001F is whitespace to str.isspace but not White_Space: kept inside, as kraken's regex \s does.
    assert normalize_whitespace("a\x1fb") == "a\x1fb"


def test_normalization_before_whitespace() -> None:
    t = TextTransform(normalization="NFKC", bidi_reordering=False)
    assert t("\ufb01n\u2002de ") == "fin de"
    assert TextTransform(normalization="NFD", bidi_reordering=False)("é") == "e\u0301"
    assert TextTransform(normalization=None, normalize_whitespace=False, bidi_reordering=False)(" x ") == " x "


def test_invalid_options() -> None:
    with pytest.raises(UsageError):
        TextTransform(normalization="NFX")
    with pytest.raises(UsageError):
        TextTransform(base_dir="up")


def test_ltr_text_is_unchanged() -> None:
    t = TextTransform()
    for s in ["y salvedades alli expressadas; Y fue acetada;", "(12) [a] <b>", "$pag:39", ""]:
        assert t(s) == s


def test_rtl_reversal_mirroring_and_numbers() -> None:
    # Real OpenITI line (IbnAthir.Kamil 000001): brackets are mirrored on RTL levels, digits keep their order.
    logical = "الله ، صعلم، [المدينة من تبوك] في رمضان(2)."
    assert get_display(logical) == ".(2)ناضمر يف [كوبت نم ةنيدملا] ،ملعص ، هللا"
    assert get_display("عربي 12.5 عربي") == "يبرع 12.5 يبرع"
    assert get_display("abc (def) العربية (123) [x]") == "abc (def) (123) ةيبرعلا [x]"


def test_base_direction() -> None:
    s = "abc (def) العربية (123) [x]"
    assert get_display(s, "R") == "[x] (123) ةيبرعلا abc (def)"
    assert get_display(s, "L") == get_display(s)
    assert TextTransform(base_dir="R")(s) == get_display(s, "R")
    # kraken's way of forcing a base direction: bidi_reordering='R'.
    assert TextTransform(bidi_reordering="R")(s) == get_display(s, "R")
    # A per-line direction given to the call wins over the configured one.
    assert TextTransform(base_dir="L")(s, base_dir="R") == get_display(s, "R")
    # Trailing whitespace goes to the paragraph's end (rule L1) when whitespace is not normalized.
    assert TextTransform(normalize_whitespace=False)("عربي ") == " يبرع"


def test_explicit_formatting_characters_are_removed() -> None:
    assert get_display("a\u202bb\u202cc") == "abc"
    assert get_display("عر\u200dب") == "برع"


def test_python_bidi_defects_that_we_correct() -> None:
    """python-bidi's own get_display neither mirrors brackets nor drops embedding controls (kraken does)."""
    from bidi import get_display as pb_display

    assert pb_display("رمضان(2).") == ".)2(ناضمر"
    assert get_display("رمضان(2).") == ".(2)ناضمر"
    assert "\u202b" in pb_display("a\u202bb\u202cc")


def _mirror(ch: str) -> str:
    from bidi.mirror import MIRRORED

    return MIRRORED.get(ch, ch)


def test_openiti_arabic_lines(shared_data: Path) -> None:
    """Every line of one OpenITI book: pure Arabic lines are reversed with brackets mirrored; digit runs
    keep their left-to-right order; the transform never loses or invents a character."""
    folder = shared_data / "openiti_arabic" / "ara" / "book_IbnAthir.Kamil" / "7_final"
    files = sorted(folder.glob("*.gt.txt"))
    assert len(files) > 500
    transform = TextTransform()
    checked_plain = checked_digits = 0
    for f in files:
        logical = normalize_whitespace(f.read_text(encoding="utf-8"))
        display = transform(logical)
        assert sorted(min(c, _mirror(c)) for c in display) == sorted(min(c, _mirror(c)) for c in logical), f
        classes = {unicodedata.bidirectional(c) for c in logical}
        if classes <= {"AL", "R", "NSM", "WS", "ON", "CS"}:
            # Neutrals between Arabic letters are RTL too, except at the line ends (they follow the base, RTL).
            assert display == "".join(_mirror(c) for c in reversed(logical)), f
            checked_plain += 1
        elif "EN" in classes and not classes & {"L", "AN", "ES", "ET"}:
            digits = "".join(c for c in logical if unicodedata.bidirectional(c) == "EN")
            runs = [r for r in "".join(c if c.isdigit() else " " for c in logical).split()]
            for run in runs:
                assert run in display, (f, run)
            assert len(digits) == sum(map(len, runs))
            checked_digits += 1
    assert checked_plain > 400
    assert checked_digits > 10
