"""Mapping between text and CTC labels, numbered exactly as kraken numbers them.

Label 0 is the CTC blank and never appears in a codec. A codec maps strings (one or several code points) to
label sequences (one or several labels); it must be decodable, so no two strings share a sequence and no
sequence is a prefix of another one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from scriba.errors import CodecError, EncodeError, read_bytes

# a label is a row of the output layer: beyond this the layer alone would take gigabytes
MAX_LABEL = 1_000_000

Span = tuple[int, int, int, float]
CharSpan = tuple[str, int, int, float]


def _load_mapping(charset: Any, path: str | None = None) -> dict[str, list[int]]:
    if isinstance(charset, Mapping):
        c2l: dict[str, list[int]] = {}
        for key, value in charset.items():
            if not isinstance(key, str) or key == "":
                raise CodecError(f"codec entry {key!r} is not a non-empty string", path=path)
            if any("\ud800" <= ch <= "\udfff" for ch in key):
                # JSON's "\ud800" escapes decode to lone surrogates, which no text (and no weights file) holds
                raise CodecError(f"codec entry {key!r} holds a lone surrogate", path=path)
            labels = [value] if isinstance(value, int) else list(value) if isinstance(value, (list, tuple)) else []
            if not labels or any(
                not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_LABEL for v in labels
            ):
                raise CodecError(
                    f"codec entry {key!r} needs a list of labels from 1 to {MAX_LABEL:,} (0 is the CTC blank), "
                    f"got {value!r}",
                    path=path,
                )
            c2l[key] = labels
        return c2l
    if isinstance(charset, str):
        chars = list(charset)
    else:
        chars = list(charset)
    if len(set(chars)) != len(chars):
        dups = sorted({c for c in chars if chars.count(c) > 1})
        raise CodecError(f"duplicate entries in character set: {''.join(dups)!r}")
    return {c: [i] for i, c in enumerate(sorted(chars), start=1)}


def load_codec_file(path: str) -> dict[str, list[int]]:
    """Reads an explicit codec from a JSON object file ``{"a": [1], "ch": [2, 3]}``."""
    path = str(path)
    raw = read_bytes(path, CodecError, "codec file")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise CodecError(f"codec file is not UTF-8 text (byte {exc.start})", path=path) from None
    except json.JSONDecodeError as exc:
        raise CodecError(f"codec file is not valid JSON: {exc.msg}", path=path, element=f"line {exc.lineno}") from None
    except RecursionError:
        raise CodecError("codec file is nested too deeply to be a codec", path=path) from None
    if not isinstance(data, dict):
        raise CodecError("codec file must hold a JSON object mapping strings to label lists", path=path)
    if not data:
        raise CodecError("codec file holds an empty object: a codec needs at least one entry", path=path)
    return _load_mapping(data, path)


class Codec:
    """A many-to-many codec between strings and label sequences (kraken's ``PytorchCodec`` semantics)."""

    def __init__(self, charset_or_c2l: Mapping[str, Sequence[int] | int] | str | Iterable[str], strict: bool = False):
        self.c2l: dict[str, list[int]] = _load_mapping(charset_or_c2l)
        self.strict = strict
        self._rebuild()

    @classmethod
    def from_text(cls, texts: Iterable[str], strict: bool = False) -> Codec:
        """The automatic codec: one label per distinct code point, sorted by code point, labels 1..N."""
        chars: set[str] = set()
        for t in texts:
            chars.update(t)
        return cls(sorted(chars), strict=strict)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | str | None, texts: Iterable[str] = ()) -> Codec:
        """A codec from a ``--codec`` value (mapping, JSON path or None for the automatic codec)."""
        if spec is None:
            return cls.from_text(texts)
        if isinstance(spec, str):
            return cls(load_codec_file(spec))
        if isinstance(spec, Mapping) and not spec:
            raise CodecError("the codec is empty: it needs at least one entry (a string mapped to labels)")
        if not isinstance(spec, Mapping):
            raise CodecError(f"a codec is a mapping of strings to label lists, not a {type(spec).__name__}")
        return cls(spec)

    def _rebuild(self) -> None:
        seqs = [tuple(v) for v in self.c2l.values()]
        if len(set(seqs)) != len(seqs):
            raise CodecError("codec is not valid: two strings share a label sequence")
        ordered = sorted(seqs)
        for a, b in zip(ordered, ordered[1:]):
            if b[: len(a)] == a:
                raise CodecError(f"codec is not valid: label sequence {list(a)} is a prefix of {list(b)}")
        self.l2c: dict[tuple[int, ...], str] = {tuple(v): k for k, v in self.c2l.items()}
        # longest keys first so that multi-character entries win over their first character
        self._keys_by_len = sorted((k for k in self.c2l if len(k) > 1), key=len, reverse=True)
        self._multi = [seq for seq in self.l2c if len(seq) > 1]
        self.max_label = max((max(v) for v in self.c2l.values()), default=0)

    def __len__(self) -> int:
        return len(self.c2l)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and self.c2l == other.c2l

    def __repr__(self) -> str:
        return f"Codec({len(self.c2l)} entries, max_label={self.max_label})"

    @property
    def is_valid(self) -> bool:
        return True

    def encode(self, text: str) -> list[int]:
        """Greedy encoding, longest entry first; characters the codec lacks raise when strict, else vanish."""
        labels: list[int] = []
        missing: set[str] = set()
        i = 0
        n = len(text)
        while i < n:
            for key in self._keys_by_len:
                if text.startswith(key, i):
                    labels.extend(self.c2l[key])
                    i += len(key)
                    break
            else:
                ch = text[i]
                if ch in self.c2l:
                    labels.extend(self.c2l[ch])
                else:
                    missing.add(ch)
                i += 1
        if missing and self.strict:
            shown = "".join(sorted(missing))
            raise EncodeError(f"text contains characters missing from the codec: {shown!r}", missing=missing)
        return labels

    def missing(self, text: str) -> set[str]:
        """Code points of ``text`` that the codec cannot encode."""
        strict, self.strict = self.strict, True
        try:
            self.encode(text)
        except EncodeError as exc:
            return exc.missing
        finally:
            self.strict = strict
        return set()

    def decode(self, labels: Sequence[Span]) -> list[CharSpan]:
        """``(label, start, end, conf)`` tuples to ``(string, start, end, conf)``; multi-label entries merge."""
        out: list[CharSpan] = []
        i = 0
        n = len(labels)
        while i < n:
            lab = labels[i][0]
            single = self.l2c.get((lab,))
            if single is not None:
                out.append((single, labels[i][1], labels[i][2], labels[i][3]))
                i += 1
                continue
            for seq in self._multi:
                k = len(seq)
                if tuple(x[0] for x in labels[i : i + k]) == seq:
                    part = labels[i : i + k]
                    conf = sum(x[3] for x in part) / k
                    out.append((self.l2c[seq], part[0][1], part[-1][2], conf))
                    i += k
                    break
            else:
                if self.strict:
                    raise EncodeError(f"label {lab} cannot be decoded by the codec", missing=set())
                i += 1
        return out

    def decode_text(self, labels: Sequence[int]) -> str:
        return "".join(s for s, *_ in self.decode([(int(lab), 0, 0, 1.0) for lab in labels]))

    def add_labels(self, chars: Mapping[str, Sequence[int]] | str | Iterable[str]) -> Codec:
        """A new codec with ``chars`` appended after the current maximum label (``--resize union``)."""
        c2l = {k: list(v) for k, v in self.c2l.items()}
        nxt = self.max_label + 1
        if isinstance(chars, Mapping):
            for key in chars:
                if key not in c2l:
                    c2l[key] = [nxt]
                    nxt += 1
        else:
            for key in sorted(set(chars)):
                if key not in c2l:
                    c2l[key] = [nxt]
                    nxt += 1
        return Codec(c2l, strict=self.strict)

    def merge(self, other: Codec) -> tuple[Codec, set[int]]:
        """Keeps shared entries, drops ours that ``other`` lacks, appends ``other``'s new ones (``--resize new``).

        Returns the merged codec and the labels deleted from this one (output rows to remove). Labels above a
        deleted one move down so that numbering stays dense.
        """
        kept = {k: list(v) for k, v in self.c2l.items() if k in other.c2l}
        removed = {k: v for k, v in self.c2l.items() if k not in other.c2l}
        used = {lab for v in kept.values() for lab in v}
        deleted = {lab for v in removed.values() for lab in v if lab not in used}
        ordered_del = sorted(deleted)

        def shift(lab: int) -> int:
            return lab - sum(1 for d in ordered_del if d < lab)

        c2l = {k: [shift(lab) for lab in v] for k, v in kept.items()}
        nxt = max((max(v) for v in c2l.values()), default=0) + 1
        for key, seq in sorted(other.c2l.items(), key=lambda kv: kv[1]):
            if key not in c2l:
                c2l[key] = list(range(nxt, nxt + len(seq)))
                nxt += len(seq)
        return Codec(c2l, strict=self.strict), deleted

    def to_json(self) -> dict[str, list[int]]:
        """The plain ``{string: [labels]}`` object stored in weights files."""
        return {k: list(v) for k, v in self.c2l.items()}
