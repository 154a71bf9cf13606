"""Text transforms applied to transcriptions, in kraken's order.

1. Unicode normalization (``NFC``/``NFD``/``NFKC``/``NFKD``) when asked for.
2. Whitespace: every Unicode ``White_Space`` character becomes ``' '``, then the ends are stripped.
3. Bidi reordering from logical to display order (UAX #9), base direction ``L``, ``R`` or detected from
   the first strong character.

Bidi levels come from python-bidi (the Rust ``unicode-bidi`` engine: UAX #9 with bracket pairs), but its
``get_display`` is not used as is, because it differs from kraken 7 in two ways that change training targets:
it does not mirror characters on right-to-left levels (rule L4: ``(`` must become ``)``), and it keeps the
explicit embedding characters and boundary neutrals that rule X9 removes. So we take its resolved levels
and do the line reordering (L1, L2), mirroring (L4) and X9 removal here.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from scriba.errors import UsageError

NORMALIZATIONS = ("NFC", "NFD", "NFKC", "NFKD")

# The Unicode White_Space property (what kraken's ``regex`` pattern ``\s`` matches); ``re``'s ``\s`` would
# also take the information separators U+001C..U+001F.
_WHITESPACE = re.compile("[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")

# Bidi classes that rule X9 removes from the display string.
_X9_REMOVED = frozenset({"RLE", "LRE", "RLO", "LRO", "PDF", "BN"})
# Classes that rule L1 resets to the paragraph level when they trail a line or precede a separator.
_L1_TRAILING = frozenset({"WS", "FSI", "LRI", "RLI", "PDI"})

_PLAIN_LTR = frozenset({"L", "EN", "ES", "ET", "CS", "ON", "NSM", "WS", "S", "B"})

_LEVELS = re.compile(r"Level\(\s*(\d+),?\s*\)")


def normalize_whitespace(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


@lru_cache(maxsize=1)
def _mirrors() -> dict[str, str]:
    from bidi.mirror import MIRRORED

    return MIRRORED


def _resolved_levels(text: str, base_dir: str | None) -> tuple[list[int], list[tuple[int, int, int]]]:
    """Per-character embedding levels and paragraphs ``(start, end, level)`` in character offsets.

    python-bidi only exposes the levels through its debug dump (indexed by UTF-8 byte), which we parse.
    """
    from bidi import get_display

    dump = get_display(text, base_dir=base_dir, debug=True)
    levels_part, _, para_part = dump.partition("paragraphs:")
    byte_levels = [int(m) for m in _LEVELS.findall(levels_part)]
    byte_paras = [
        (int(a), int(b), int(lv))
        for a, b, lv in re.findall(r"range:\s*(\d+)\.\.(\d+),\s*level:\s*Level\(\s*(\d+)", para_part)
    ]
    char_of_byte: dict[int, int] = {}
    levels: list[int] = []
    offset = 0
    for i, ch in enumerate(text):
        char_of_byte[offset] = i
        levels.append(byte_levels[offset])
        offset += len(ch.encode("utf-8"))
    char_of_byte[offset] = len(text)
    if len(byte_levels) != offset:
        raise RuntimeError("unexpected python-bidi debug output")
    paras = [(char_of_byte[a], char_of_byte[b], lv) for a, b, lv in byte_paras]
    return levels, paras


def _reorder_line(chars: list[str], classes: list[str], levels: list[int], para_level: int) -> list[str]:
    n = len(chars)
    levels = list(levels)
    # L1: separators, and whitespace before them or at the end of the line, go back to the paragraph level.
    trailing = True
    for i in range(n - 1, -1, -1):
        cls = classes[i]
        if cls in ("S", "B"):
            levels[i] = para_level
            trailing = True
        elif trailing and (cls in _L1_TRAILING or cls in _X9_REMOVED):
            levels[i] = para_level
        else:
            trailing = False
    # L2: from the highest level down to the lowest odd one, reverse every run at that level or above.
    order = list(range(n))
    if n:
        highest = max(levels)
        lowest_odd = min(lv for lv in levels) | 1
        for level in range(highest, lowest_odd - 1, -1):
            i = 0
            while i < n:
                if levels[order[i]] >= level:
                    j = i
                    while j < n and levels[order[j]] >= level:
                        j += 1
                    order[i:j] = order[i:j][::-1]
                    i = j
                else:
                    i += 1
    mirrors = _mirrors()
    out = []
    for k in order:
        if classes[k] in _X9_REMOVED:
            continue
        ch = chars[k]
        if levels[k] & 1:
            ch = mirrors.get(ch, ch)
        out.append(ch)
    return out


def get_display(text: str, base_dir: str | None = None) -> str:
    """``text`` (logical order) in display order; ``base_dir`` 'L', 'R' or None (first strong character)."""
    if not text:
        return text
    if base_dir not in (None, "L", "R"):
        raise UsageError(f"invalid base direction {base_dir!r} (expected L, R or auto)")
    # Without right-to-left or explicit formatting characters, every level is 0: display = logical order.
    if base_dir != "R" and all(unicodedata.bidirectional(c) in _PLAIN_LTR for c in text):
        return text
    levels, paras = _resolved_levels(text, base_dir)
    classes = [unicodedata.bidirectional(c) for c in text]
    chars = list(text)
    out: list[str] = []
    for start, end, para_level in paras or [(0, len(text), 1 if base_dir == "R" else 0)]:
        out.extend(_reorder_line(chars[start:end], classes[start:end], levels[start:end], para_level))
    return "".join(out)


class TextTransform:
    """Callable applying kraken's text transforms: ``transform(text, base_dir=None) -> str``.

    ``bidi_reordering`` may also be ``'L'``/``'R'`` (kraken's way of forcing a base direction).
    ``base_dir`` given to the call overrides the configured one for that line.
    """

    def __init__(
        self,
        normalization: str | None = None,
        normalize_whitespace: bool = True,
        bidi_reordering: bool | str = True,
        base_dir: str | None = "auto",
    ):
        if normalization is not None and normalization not in NORMALIZATIONS:
            raise UsageError(f"invalid Unicode normalization {normalization!r} (expected one of {NORMALIZATIONS})")
        if bidi_reordering in ("L", "R"):
            base_dir, bidi_reordering = str(bidi_reordering), True
        if base_dir not in (None, "auto", "L", "R"):
            raise UsageError(f"invalid base direction {base_dir!r} (expected L, R or auto)")
        self.normalization = normalization
        self.normalize_whitespace = normalize_whitespace
        self.bidi_reordering = bool(bidi_reordering)
        self.base_dir = None if base_dir in (None, "auto") else base_dir

    @property
    def active(self) -> bool:
        """Whether the transform can change text at all."""
        return bool(self.normalization or self.normalize_whitespace or self.bidi_reordering)

    def __call__(self, text: str, base_dir: str | None = None) -> str:
        if self.normalization:
            text = unicodedata.normalize(self.normalization, text)  # type: ignore[arg-type]  # checked on init
        if self.normalize_whitespace:
            text = normalize_whitespace(text)
        if self.bidi_reordering:
            direction = base_dir if base_dir in ("L", "R") else self.base_dir
            text = get_display(text, direction)
        return text

    def __repr__(self) -> str:
        return (
            f"TextTransform(normalization={self.normalization!r}, normalize_whitespace={self.normalize_whitespace}, "
            f"bidi_reordering={self.bidi_reordering}, base_dir={self.base_dir or 'auto'!r})"
        )
