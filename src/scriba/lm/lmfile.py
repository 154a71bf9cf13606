"""Language model files: an ARPA file whose ``#`` header names the codec it was built for.

The words of the model are the codec's labels, so a model is only valid for the codec it was built with: the
header stores the codec's SHA-256 and decoding refuses a file built for another codec.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from scriba.codec import Codec
from scriba.errors import UsageError
from scriba.lm.ngram import DEFAULT_ORDER, estimate, to_arpa

MAGIC = "scriba label language model"


def codec_hash(codec: Codec) -> str:
    """SHA-256 of the codec's mapping (strings to label lists), independent of key order."""
    text = json.dumps(codec.to_json(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class LMSummary:
    path: str
    order: int
    lines: int
    labels: int
    dropped: dict[str, int]

    def __str__(self) -> str:
        msg = f"wrote {self.path}: order {self.order}, {self.lines} lines, {self.labels} labels"
        if self.dropped:
            common = sorted(self.dropped.items(), key=lambda kv: (-kv[1], kv[0]))
            shown = ", ".join(f"{c!r} (U+{ord(c):04X}) x{n}" for c, n in common[:10])
            more = f" and {len(common) - 10} more" if len(common) > 10 else ""
            msg += (f"; {len(common)} characters missing from the codec were left out "
                    f"({sum(self.dropped.values())} occurrences): {shown}{more}")
        return msg


def write_language_model(texts: Iterable[str], codec: Codec, path: str, order: int = DEFAULT_ORDER) -> LMSummary:
    """Estimates an ``order``-gram model of ``texts`` (already transformed as for training) in ``codec``'s labels
    and writes it to ``path`` (through a temporary name in the same folder)."""
    if order < 1:
        raise UsageError(f"language model order must be at least 1, got {order}")
    dropped: dict[str, int] = {}
    sentences = []
    for text in texts:
        for ch in codec.missing(text):
            dropped[ch] = dropped.get(ch, 0) + text.count(ch)
        labels = codec.encode(text)
        if labels:
            sentences.append([str(lab) for lab in labels])
    if not sentences:
        raise UsageError("no transcription could be encoded with the model's codec: nothing to build a model from")
    vocab = [str(lab) for lab in range(1, codec.max_label + 1)]
    model = estimate(sentences, vocab, order=order)
    header = [MAGIC, f"codec-sha256: {codec_hash(codec)}", f"order: {order}", f"labels: {codec.max_label}"]
    target = Path(path)
    tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        tmp.write_text(to_arpa(model, header), encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write the language model: {exc.strerror or exc}", path=str(target)) from None
    return LMSummary(str(target), order, len(sentences), codec.max_label, dropped)


def read_header(path: str) -> dict[str, str]:
    """The ``key: value`` lines of a scriba LM file's header; raises UsageError for other files."""
    fields: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline().strip()
            if first != f"# {MAGIC}":
                raise UsageError("not a scriba language model (build one with `ketos lm build`)", path=path)
            for line in fh:
                if not line.startswith("#"):
                    break
                key, _, value = line[1:].partition(":")
                fields[key.strip()] = value.strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the language model: {exc}", path=path) from None
    return fields


def check_language_model(path: str, codec: Codec) -> int:
    """Refuses a language model built for another codec; returns the number of labels it covers."""
    header = read_header(path)
    if header.get("codec-sha256") != codec_hash(codec):
        raise UsageError(
            "the language model was built for another codec than this model's; rebuild it with "
            "`ketos lm build -m MODEL ...`",
            path=path,
        )
    return int(header.get("labels", codec.max_label))
