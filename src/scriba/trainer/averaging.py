"""An exponential moving average of the weights (``--ema``), on Lightning's :class:`WeightAveraging`.

Validation, the checkpoints and so the exported weights hold the averaged network; the checkpoint keeps the
raw one too, so a resumed run continues both. The decay warms up as ``(1 + n) / (10 + n)`` over the first
updates: with a constant 0.999 the average of a short run would still be mostly its random initialisation.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import WeightAveraging


class EMA(WeightAveraging):
    """The average ``a <- d a + (1 - d) w`` after every optimizer step, ``d = min(decay, (1 + n) / (10 + n))``
    after ``n`` updates."""

    def __init__(self, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie between 0 and 1, got {decay}")
        self.decay = decay
        super().__init__(avg_fn=self._average)

    def _average(self, averaged: torch.Tensor, current: torch.Tensor, num_averaged: Any) -> torch.Tensor:
        n = float(num_averaged)
        d = min(self.decay, (1.0 + n) / (10.0 + n))
        # lerp, not d*a + (1-d)*w: a weight that does not change (a frozen backbone) keeps its exact value
        return averaged.lerp(current, 1.0 - d)
