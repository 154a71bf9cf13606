"""Span masks and negative sampling for masked contrastive pretraining.

Everything works on the subsampled sequence, i.e. on the frames that leave the convolutional front, and on
each line's *real* length there (``seq_lens``), so padding is never masked and never serves as a negative.

Meaning of ``mask_prob``: as in wav2vec2 (and kraken) it is the chance of a frame to start a mask, scaled
by the mask width, so a line of ``L`` frames receives ``int(mask_prob * L / mask_width + u)`` spans
(``u ~ U[0, 1)`` rounds stochastically). Unlike wav2vec2 the spans never overlap, so ``mask_prob`` is the
expected fraction of each line that is masked. A literal "every frame starts a span with probability p"
would cover ``1 - (1 - p) ** width`` of a line, ~94% at the defaults, and leave the encoder no context.
"""

from __future__ import annotations

import torch


def _place_spans(length: int, width: int, count: int, generator: torch.Generator | None) -> torch.Tensor:
    """Start positions of ``count`` non-overlapping spans of ``width`` in ``range(length)``, uniformly.

    The free frames ``length - count * width`` are split into ``count + 1`` gaps; choosing ``count`` sorted
    distinct slots among ``free + count`` and shifting slot ``j`` by ``j * (width - 1)`` enumerates every
    arrangement exactly once, so no rejection loop is needed.
    """
    free = length - count * width
    slots = torch.randperm(free + count, generator=generator)[:count].sort().values
    return slots + torch.arange(count) * (width - 1)


def compute_mask(
    seq_lens: torch.Tensor,
    max_len: int,
    mask_width: int,
    mask_prob: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Boolean mask ``(N, max_len)``: True at the frames to replace by the mask embedding.

    Lines no longer than ``mask_width`` get spans one frame shorter than themselves (if they have two frames
    at all), so that they keep some context and can still take part when a batch is full of short lines.
    """
    if mask_width < 1:
        raise ValueError(f"mask width must be at least 1, not {mask_width}")
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask probability must lie in [0, 1], not {mask_prob}")
    lens = seq_lens.to("cpu", torch.long).clamp(max=max_len)
    mask = torch.zeros((len(lens), max_len), dtype=torch.bool)
    if mask_prob == 0.0:
        return mask
    draws = torch.rand(len(lens), generator=generator)
    for i, length in enumerate(lens.tolist()):
        short = length <= mask_width
        width = length - 1 if short else mask_width
        if width < 1:
            continue
        count = int(mask_prob * length / width + float(draws[i]))
        count = min(count, 1 if short else length // width)
        if count == 0:
            continue
        starts = _place_spans(length, width, count, generator)
        idx = (starts[:, None] + torch.arange(width)[None, :]).reshape(-1)
        mask[i, idx] = True
    return mask


def sample_negatives(
    mask: torch.Tensor, num_negatives: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw distractors for every masked frame from the *other* masked frames of the same line.

    Masked frames are numbered in row-major order of ``mask`` (the order of ``x[mask]`` for ``x`` of shape
    ``(N, W, ...)``). Returns ``(neg_idx, valid)``: ``neg_idx (M, num_negatives)`` indexes into that
    numbering, sampled uniformly with replacement; ``valid (M,)`` is False for frames of lines with fewer
    than two masked frames, which have no possible negative (their row of ``neg_idx`` points at themselves
    and must be left out of the loss).
    """
    if num_negatives < 1:
        raise ValueError(f"the number of negatives must be at least 1, not {num_negatives}")
    mask = mask.to("cpu")
    counts = mask.sum(dim=1)
    offsets = torch.cumsum(counts, 0) - counts
    line = torch.repeat_interleave(torch.arange(len(counts)), counts)
    total = int(counts.sum())
    own = torch.arange(total) - offsets[line]
    n = counts[line]
    valid = n >= 2
    # draw from the n - 1 others, then step over the frame itself: never the positive, always uniform
    others = (n - 1).clamp(min=1)
    u = torch.rand((total, num_negatives), generator=generator)
    pick = (u * others[:, None]).long().clamp(max=(others - 1)[:, None])
    pick = pick + (pick >= own[:, None]).long()
    neg_idx = offsets[line][:, None] + pick
    idx_self = torch.arange(total)[:, None].expand(total, num_negatives)
    neg_idx = torch.where(valid[:, None], neg_idx, idx_self)
    return neg_idx, valid
