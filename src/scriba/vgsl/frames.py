"""Padded lines: a batch holds lines of different widths, right-padded; ``seq_lens`` gives each line's width."""

from __future__ import annotations

import torch

Lens = torch.Tensor | None


def mask_frames(x: torch.Tensor, lens: Lens) -> torch.Tensor:
    """Zeroes frames at or beyond each line's length along W (nothing to do when no line is padded)."""
    if lens is None:
        return x
    w = x.shape[3]
    if bool((lens >= w).all()):
        return x
    if not (torch.is_grad_enabled() and x.requires_grad):
        # inference: zero only the padding, in place, instead of a pass over the whole (large) activation
        for i, n in enumerate(lens.tolist()):
            if n < w:
                x[i, ..., max(int(n), 0) :].zero_()
        return x
    keep = torch.arange(w, device=x.device)[None, :] < lens.to(x.device)[:, None]
    return x * keep[:, None, None, :].to(x.dtype)
