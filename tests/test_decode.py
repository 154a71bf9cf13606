"""Greedy CTC decoding."""

from __future__ import annotations

import torch

from scriba.codec import Codec
from scriba.decode import decode_text, greedy_decode


def _logits(seq: list[int], n_classes: int = 4) -> torch.Tensor:
    x = torch.full((1, n_classes, len(seq)), -10.0)
    for t, lab in enumerate(seq):
        x[0, lab, t] = 10.0
    return x


def test_collapse_repeats_and_drop_blanks():
    out = greedy_decode(_logits([0, 1, 1, 0, 1, 2, 2, 0]))
    assert [(lab, s, e) for lab, s, e, _ in out[0]] == [(1, 1, 2), (1, 4, 4), (2, 5, 6)]
    assert all(0.99 < c <= 1.0 for *_, c in out[0])


def test_lengths_cut_padding():
    x = torch.cat([_logits([1, 0, 2, 3]), _logits([3, 3, 3, 3])])
    out = greedy_decode(x, torch.tensor([4, 2]))
    assert [s[0] for s in out[0]] == [1, 2, 3]
    assert [s[0] for s in out[1]] == [3]


def test_decode_text_with_codec():
    codec = Codec("abc")
    preds = decode_text(_logits([1, 0, 2, 3, 3]).unsqueeze(2), torch.tensor([5]), codec)
    assert preds[0].text == "abc"
    assert preds[0].positions == [(0, 0), (2, 2), (3, 4)]
    assert len(preds[0].confidences) == 3
