"""Choosing the language model's weight and label bonus on validation lines: a grid search on their CER.

The network runs once; each grid point only decodes again, in worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from scriba.codec import Codec
from scriba.lm.beam import BeamSettings, ParallelBeamDecoder
from scriba.metrics import Tally


@dataclass(frozen=True)
class GridPoint:
    lm_weight: float
    token_bonus: float
    errors: int
    chars: int

    @property
    def cer(self) -> float:
        return self.errors / max(1, self.chars)


def tune_lm(
    log_probs: Sequence[np.ndarray],
    references: Sequence[str],
    codec: Codec,
    base: BeamSettings,
    weights: Sequence[float],
    bonuses: Sequence[float],
    processes: int = 1,
    normalize: Callable[[str], str] = str,
    on_point: Callable[[GridPoint], None] | None = None,
) -> list[GridPoint]:
    """Every (weight, bonus) pair's error count on the lines, best first (ties: the smaller weight and bonus).

    ``log_probs`` are each line's ``(T, C)`` natural-log posteriors, ``references`` their transcriptions as
    validation compares them; ``normalize`` is applied to the decoded text (``ketos test``'s normalisation).
    The grid's values come from :class:`scriba.config.LMTuneConfig` when ``ketos lm tune`` calls this;
    ``on_point`` hears of each point as it is scored (a grid over thousands of lines takes minutes).
    """
    points = []
    for w in weights:
        for b in bonuses:
            settings = replace(base, lm_weight=w, token_bonus=b)
            with ParallelBeamDecoder(settings, processes) as dec:
                tally = score_decoded(dec.decode_all(log_probs), references, codec, normalize)
            points.append(GridPoint(w, b, tally.errors, tally.chars))
            if on_point is not None:
                on_point(points[-1])
    return sorted(points, key=lambda p: (p.errors, p.lm_weight, p.token_bonus))


def greedy_tally(
    log_probs: Sequence[np.ndarray], references: Sequence[str], codec: Codec, normalize: Callable[[str], str] = str
) -> Tally:
    """The same lines decoded greedily (best path, no language model): what a grid point has to beat."""
    import torch

    from scriba.decode import greedy_decode

    decoded = [greedy_decode(torch.from_numpy(np.ascontiguousarray(lp.T))[None])[0] for lp in log_probs]
    return score_decoded(decoded, references, codec, normalize)


def score_decoded(
    decoded: Sequence[Sequence[Any]], references: Sequence[str], codec: Codec, normalize: Callable[[str], str]
) -> Tally:
    """Decoded label spans of each line against its reference, into a tally (predictions through ``normalize``)."""
    tally = Tally(keep_lines=False)
    for spans, ref in zip(decoded, references):
        tally.add(ref, normalize("".join(c for c, *_ in codec.decode(spans))))
    return tally
