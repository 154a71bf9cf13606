"""``ketos lm build``: a character n-gram language model of training transcriptions, in a model's labels.

The transcriptions go through the same text transforms as for training (Unicode normalisation, whitespace,
bidi reordering), so the model's labels and the language model's words are the same sequence; the codec is the
recognition model's, and its hash is written into the file so that decoding with another model is refused.
"""

from __future__ import annotations

import logging

from scriba.config import LMBuildConfig
from scriba.data.records import SkippedItem
from scriba.data.sources import iter_records
from scriba.errors import NoDataError, UsageError
from scriba.lm.lmfile import LMSummary, write_language_model
from scriba.text import TextTransform

logger = logging.getLogger(__name__)


def build_language_model(cfg: LMBuildConfig) -> LMSummary:
    """Builds and writes the language model; returns what was written (lines left out are logged)."""
    if not cfg.model:
        raise UsageError("a language model is built in a recognition model's labels: give the model with -m/--model")
    if not cfg.training_data:
        raise UsageError("no transcriptions were given: use -t/--training-data or pass files as arguments")
    from scriba.weights import load_model

    codec = load_model(cfg.model).codec
    if codec is None:
        raise UsageError("the model has no codec", path=cfg.model)
    transform = TextTransform(
        normalization=cfg.normalization,
        normalize_whitespace=cfg.normalize_whitespace,
        bidi_reordering=cfg.bidi_reordering,
        base_dir=cfg.base_dir,
    )
    skipped: list[SkippedItem] = []
    texts = []
    explicit = getattr(transform, "base_dir", None)  # a --base-dir given by the user wins over the files'
    for rec in iter_records(cfg.training_data, cfg.format_type, cfg.linetype, on_skip=skipped.append):
        text = transform(rec.text, rec.base_dir if explicit is None else None) if rec.text else ""
        if text:
            texts.append(text)
    for item in skipped[:5]:
        logger.warning("left out: %s", item)
    if len(skipped) > 5:
        logger.warning("... and %d more left out", len(skipped) - 5)
    if not texts:
        raise NoDataError(f"none of the {len(cfg.training_data)} inputs holds a transcription")
    return write_language_model(texts, codec, cfg.output, order=cfg.order)
