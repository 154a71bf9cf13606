"""CTC beam search over a network's label posteriors with a label n-gram language model (flashlight-text).

flashlight-text is an optional extra (``pip install 'scriba[lm]'``): its lexicon-free decoder searches over the
codec's labels and asks KenLM for the score of each new label, so the language model file's words are the
labels written as numbers (see :mod:`scriba.lm.ngram`). The decoder is C++ that holds the GIL, so
:class:`BeamDecoder` runs in worker processes when asked for several (see :meth:`BeamDecoder.decode_all`).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scriba.decode import path_spans
from scriba.errors import UsageError

Span = tuple[int, int, int, float]


@dataclass(frozen=True)
class BeamSettings:
    """Search settings: ``lm_weight`` scales the LM's log10 score; ``token_bonus`` is added to every non-blank
    label's log-posterior in every frame (it offsets the LM's preference for short outputs)."""

    lm_path: str
    n_labels: int  # codec labels 1..n_labels; 0 is the blank
    lm_weight: float = 0.5
    token_bonus: float = 0.0
    beam_size: int = 16
    beam_token_size: int = 8  # labels tried per frame: the most probable ones
    beam_threshold: float = 20.0


def require_flashlight() -> Any:
    try:
        from flashlight.lib.text import decoder
        from flashlight.lib.text.decoder.kenlm import KenLM
    except ImportError:
        raise UsageError(
            "language-model decoding needs flashlight-text: pip install 'scriba[lm]' (or pip install flashlight-text)"
        ) from None
    decoder.KenLM = KenLM  # its new home; the old attribute warns
    return decoder


@contextlib.contextmanager
def _quiet_stdio() -> Iterator[None]:
    """KenLM prints its loading progress on the C-level stdout/stderr: keep it off the user's terminal."""
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null:
        try:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


class BeamDecoder:
    """Decodes one line's ``(T, C)`` log-posteriors into ``(label, start, end, confidence)`` spans."""

    def __init__(self, settings: BeamSettings) -> None:
        fl = require_flashlight()
        from flashlight.lib.text.dictionary import Dictionary

        self.settings = settings
        words = Dictionary()
        words.add_entry("<blank>")
        for label in range(1, settings.n_labels + 1):
            words.add_entry(str(label))
        try:
            with _quiet_stdio():
                kenlm = fl.KenLM(settings.lm_path, words)
        except RuntimeError as exc:  # KenLM's parse errors: a damaged or hand-edited file
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "not a valid ARPA file"
            raise UsageError(f"cannot read the language model: {reason}", path=settings.lm_path) from None
        self._lm = kenlm  # the decoder holds a pointer to it: keep the object alive beside it
        opts = fl.LexiconFreeDecoderOptions(
            beam_size=settings.beam_size,
            beam_size_token=min(settings.beam_token_size, settings.n_labels + 1),
            beam_threshold=settings.beam_threshold,
            lm_weight=settings.lm_weight,
            sil_score=0.0,
            log_add=False,
            criterion_type=fl.CriterionType.CTC,
        )
        # no silence token in a label LM: the blank stands in, and the decoder never scores blanks with the LM
        self._decoder = fl.LexiconFreeDecoder(opts, self._lm, 0, 0, [])

    def decode(self, log_probs: np.ndarray) -> list[Span]:
        """Best label sequence of one line (``log_probs``: float32 ``(T, C)``, natural-log posteriors)."""
        posteriors = np.ascontiguousarray(log_probs, dtype=np.float32)
        t, c = posteriors.shape
        if t == 0:
            return []
        emissions = posteriors
        if self.settings.token_bonus:
            # flashlight's lexicon-free search has no label bonus, and KenLM refuses positive log-probabilities;
            # a bonus on every non-blank frame (a blank penalty; for CTC's one-frame label peaks close to a bonus
            # per label) keeps the search in C++: a Python LM adding it per label decoded 11x slower
            emissions = posteriors.copy()
            emissions[:, 1:] += self.settings.token_bonus
        result = self._decoder.decode(emissions.ctypes.data, t, c)[0]
        return frames_to_spans(list(result.tokens)[1:t + 1], posteriors)


def frames_to_spans(frames: Sequence[int], log_probs: np.ndarray) -> list[Span]:
    """Per-frame labels (CTC alignment) to spans; a span's confidence is its best frame's posterior."""
    return path_spans(frames, lambda lab, a, b: math.exp(float(log_probs[a:b, lab].max())))


_WORKER: BeamDecoder | None = None


def _start_worker(settings: BeamSettings) -> None:
    global _WORKER
    _WORKER = BeamDecoder(settings)


def _decode_in_worker(log_probs: np.ndarray) -> list[Span]:
    assert _WORKER is not None
    return _WORKER.decode(log_probs)


class ParallelBeamDecoder:
    """:class:`BeamDecoder` in ``processes`` worker processes (flashlight's search holds the GIL), or in this
    process when ``processes`` is 0 or 1. Use it as a context manager so that the workers end."""

    def __init__(self, settings: BeamSettings, processes: int = 1) -> None:
        self.settings = settings
        self.processes = processes
        self._local: BeamDecoder | None = None
        self._pool: Any = None
        if processes <= 1:
            self._local = BeamDecoder(settings)
        else:
            import multiprocessing as mp

            BeamDecoder(settings)  # fail here, with a clear message, rather than in every worker
            # spawned, not forked: a fork of a process running torch's thread pools can deadlock
            self._pool = mp.get_context("spawn").Pool(processes, initializer=_start_worker, initargs=(settings,))

    def decode_all(self, lines: Sequence[np.ndarray]) -> list[list[Span]]:
        if self._local is not None:
            return [self._local.decode(lp) for lp in lines]
        return list(self._pool.map(_decode_in_worker, lines, chunksize=max(1, len(lines) // (4 * self.processes))))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> ParallelBeamDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
