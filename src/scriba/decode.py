"""Greedy (best-path) CTC decoding of network outputs, as used by validation, ``ketos test`` and inference."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from scriba.codec import Codec

Span = tuple[int, int, int, float]


@dataclass
class Prediction:
    """A decoded line: ``confidences[i]`` and ``positions[i]`` (output-frame ``(start, end)``) per character."""

    text: str
    confidences: list[float] = field(default_factory=list)
    positions: list[tuple[int, int]] = field(default_factory=list)


def greedy_decode(logits: torch.Tensor, lengths: torch.Tensor | None = None) -> list[list[Span]]:
    """Best path per line: argmax per frame, repeats collapsed, blanks (0) dropped.

    ``logits`` is ``(N, C, W)`` (or ``(N, C, 1, W)``); ``lengths`` the valid frames per line. A label's
    confidence is the highest softmax probability over the frames of its run.
    """
    if logits.dim() == 4:
        logits = logits.squeeze(2)
    n, _, w = logits.shape
    if lengths is None:
        lengths = torch.full((n,), w, dtype=torch.long)
    probs = torch.softmax(logits.detach().float(), dim=1)
    conf, best = probs.max(dim=1)
    best_l = best.cpu().tolist()
    conf_l = conf.cpu().tolist()
    out: list[list[Span]] = []
    for i, length in enumerate(lengths.cpu().tolist()):
        confs: list[float] = conf_l[i][: int(length)]

        def best_frame(lab: int, a: int, b: int, confs: list[float] = confs) -> float:
            return max(confs[a:b])

        out.append(path_spans(best_l[i][: int(length)], best_frame))
    return out


def path_spans(path: Sequence[int], confidence: Callable[[int, int, int], float]) -> list[Span]:
    """A CTC path (one label per frame) as ``(label, start, end, conf)`` spans: repeats collapsed, blanks (0)
    dropped; ``confidence(label, start, stop)`` scores the run of frames ``start:stop``."""
    spans: list[Span] = []
    start = 0
    for j in range(1, len(path) + 1):
        if j == len(path) or path[j] != path[start]:
            lab = int(path[start])
            if lab != 0:
                spans.append((lab, start, j - 1, confidence(lab, start, j)))
            start = j
    return spans


def predictions(lines: Sequence[Sequence[Span]], codec: Codec) -> list[Prediction]:
    """Each line's label spans through the codec: text, per-character confidences and frame positions."""
    preds: list[Prediction] = []
    for spans in lines:
        chars = codec.decode(spans)
        preds.append(
            Prediction(
                text="".join(c for c, *_ in chars),
                confidences=[float(c[3]) for c in chars],
                positions=[(int(c[1]), int(c[2])) for c in chars],
            )
        )
    return preds


def decode_text(logits: torch.Tensor, lengths: torch.Tensor | None, codec: Codec) -> list[Prediction]:
    """Greedy decoding followed by the codec: text, per-character confidences and frame positions."""
    return predictions(greedy_decode(logits, lengths), codec)
