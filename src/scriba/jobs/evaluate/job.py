"""``ketos test``: run a recognition model over ground truth and tally how well it reads.

This is the training data path cut after the network, without augmentation: records -> ``LineDataset`` (the
same image and text transforms as training) -> :class:`~scriba.recognizer.Recognizer` (batches, network,
``scriba.decode``) -> :class:`~scriba.metrics.Tally`. Validation during training calls the same
``Recognizer.score_batch``, so the numbers agree.

As in kraken, references get all text transforms (normalization, whitespace, bidi reordering to display
order) while predictions, which the network emits in display order already, get only normalization and
whitespace. The line type and legacy-polygon setting default to the model's.

Speed: lines are batched by similar width (``-B``) so that little padding is computed, images are prepared
in ``--workers`` processes, and edit distances are computed by rapidfuzz.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scriba.config import GlobalConfig, TestConfig
from scriba.data.records import LineRecord, SkippedItem
from scriba.errors import NoDataError, UsageError
from scriba.jobs.evaluate.result import EvaluationResult
from scriba.machine import keep_freed_memory
from scriba.metrics import Tally, prediction_normalizer

if TYPE_CHECKING:
    from PIL import Image

    from scriba.recognizer import Recognizer
    from scriba.vgsl import RecognitionModel

__all__ = ["EvaluationResult", "evaluate", "run_test", "write_reports"]


_XML_FORMATS = ("xml", "alto", "page")


# -- helpers --------------------------------------------------------------------------------------------------


class _Unencodable:
    """Finds reference characters the model's codec lacks, with set operations for the common case."""

    def __init__(self, codec: Any):
        self.codec = codec
        self.singles = frozenset(k for k in codec.c2l if len(k) == 1)
        self.has_multi = any(len(k) > 1 for k in codec.c2l)

    def __call__(self, text: str) -> set[str]:
        missing = set(text) - self.singles
        if missing and self.has_multi:
            missing = set(self.codec.missing(text))
        return missing


# -- the job --------------------------------------------------------------------------------------------------


def evaluate(
    model: RecognitionModel | str | os.PathLike[str],
    data: Sequence[LineRecord] | Sequence[str | os.PathLike[str]] | str | os.PathLike[str] | Any,
    cfg: TestConfig | None = None,
    g: GlobalConfig | None = None,
    *,
    skipped: list[SkippedItem] | None = None,
    progress: bool | None = None,
) -> EvaluationResult:
    """Evaluates ``model`` (a model or its file) on ``data`` and returns the tally and notes for the reports.

    ``data`` is what ``ketos test`` takes (files, globs and manifests, read in ``cfg.format_type``), line
    records, or a ready ``LineDataset``. ``cfg`` holds the data and text options (``model``, ``test_data`` and
    the report paths are ``ketos test``'s and not needed here); ``g`` the device, precision, workers and threads.

    >>> from scriba import evaluate
    >>> from scriba.config import TestConfig
    >>> result = evaluate(weights, "examples/froc_sample/test.lst", TestConfig(format_type="path", normalization="NFD"))
    >>> result.tally.lines_seen, result.tally.chars
    (49, 1829)
    """
    g = g or GlobalConfig()
    cfg = cfg or TestConfig()
    start = time.perf_counter()
    skipped = list(skipped or [])
    model_file = None
    if isinstance(model, (str, os.PathLike)):
        from scriba.weights import load_model

        model_file = os.fspath(model)
        model = load_model(model_file)
    meta = getattr(model, "metadata", {}) or {}
    rec = recognizer_for(model, cfg, g)
    legacy = rec.legacy_polygons
    records, dataset = evaluation_set(rec, data, cfg, meta, skipped)
    if len(dataset) == 0:
        raise NoDataError("the test set has no lines")

    pred_transform = prediction_normalizer(cfg.normalization, cfg.normalize_whitespace)
    unencodable = _Unencodable(model.codec)
    tally = Tally()
    missing_chars: Counter[str] = Counter()
    missing_lines = 0
    try:
        with rec.session():
            for batch in usable_batches(rec, dataset, records, skipped, show_progress(g, progress)):
                rec.score_batch(batch, tally, pred_transform)
                for ref in batch["texts"]:
                    miss = unencodable(ref)
                    if miss:
                        missing_lines += 1
                        missing_chars.update(c for c in ref if c in miss)
    finally:
        rec.close()  # the language model's worker processes, if any
    if tally.lines_seen == 0:
        raise NoDataError(f"none of the {len(dataset)} test lines could be evaluated ({skipped[0]})")
    return EvaluationResult(
        model=model_file or str(getattr(model, "path", "") or ""),
        name=Path(model_file).name if model_file else str(meta.get("name", "") or ""),
        tally=tally,
        settings=_settings(cfg, g, legacy, rec.device),
        skipped=skipped,
        unencodable=missing_chars,
        unencodable_lines=missing_lines,
        seconds=time.perf_counter() - start,
        records=records if records is not None else [],
        legacy_polygons=legacy,
        image_loader=_dataset_image_loader(dataset),
    )


def recognizer_for(model: RecognitionModel, cfg: TestConfig, g: GlobalConfig, *, with_lm: bool = True) -> Recognizer:
    """The recognizer of ``cfg`` and ``g`` (legacy polygons: the model's unless ``--no-legacy-polygons``); with
    ``cfg.lm`` and ``with_lm`` it decodes by beam search with that language model."""
    from scriba.recognizer import Recognizer

    meta = getattr(model, "metadata", {}) or {}
    lm = cfg.lm if with_lm else None
    return Recognizer(
        model,
        device=g.device,
        precision=g.precision,
        batch_size=max(1, cfg.batch_size),
        padding=cfg.padding,
        num_workers=g.num_workers,
        num_threads=g.num_threads,
        legacy_polygons=False if cfg.no_legacy_polygons else bool(meta.get("legacy_polygons", False)),
        lm=lm,
        lm_weight=cfg.lm_weight,
        lm_bonus=cfg.lm_bonus,
        beam_size=cfg.beam_size,
    )


def usable_batches(
    rec: Recognizer, dataset: Any, records: Sequence[LineRecord] | None, skipped: list[SkippedItem], progress: bool
) -> Iterator[dict[str, Any]]:
    """The batches of ``dataset`` that hold lines to score; the lines that could not be used go to ``skipped``."""
    for batch, bad in rec.iter_batches(dataset, require_text=True, progress=progress):
        for i, reason in bad:
            line = records[i] if records is not None else None
            skipped.append(SkippedItem(line.source if line else "dataset", line.id if line else str(i), reason))
        if batch is not None:
            yield batch


def show_progress(g: GlobalConfig, progress: bool | None = None) -> bool:
    """A progress bar unless the caller decided: on a terminal, when no ``-v`` log shares stderr."""
    return progress if progress is not None else (g.verbose == 0 and _stderr_is_tty())


def evaluation_set(
    rec: Any, data: Any, cfg: TestConfig, meta: dict[str, Any], skipped: list[SkippedItem]
) -> tuple[Sequence[LineRecord] | None, Any]:
    """The records (None when only a dataset was given) and the dataset of ``data``."""
    from scriba.text import TextTransform

    if isinstance(data, (str, os.PathLike)):
        data = [data]
    if isinstance(data, Sequence) and data and isinstance(data[0], (str, os.PathLike)):
        from scriba.data.sources import resolve_inputs

        records, skipped_here = load_test_records(replace(cfg, test_data=resolve_inputs(data)), meta)
        skipped.extend(skipped_here)
        if not records:
            why = f" ({len(skipped_here)} skipped; first: {skipped_here[0]})" if skipped_here else ""
            raise NoDataError(f"the test set has no lines{why}", path=os.fspath(data[0]) if len(data) == 1 else None)
        data = records
    if isinstance(data, Sequence) and (not data or isinstance(data[0], LineRecord)):
        text_transform = TextTransform(
            normalization=cfg.normalization,
            normalize_whitespace=cfg.normalize_whitespace,
            bidi_reordering=cfg.bidi_reordering,
            base_dir=cfg.base_dir,
        )
        return data, rec.dataset(data, text_transform)
    return getattr(data, "records", None), data


def _dataset_image_loader(dataset: Any) -> Callable[[int], Image.Image] | None:
    loader = getattr(dataset, "line_image", None)
    return loader if callable(loader) else None


def _settings(cfg: TestConfig, g: GlobalConfig, legacy: bool, device: Any) -> dict[str, Any]:
    return {
        "format_type": cfg.format_type,
        "linetype": cfg.linetype,
        "batch_size": cfg.batch_size,
        "padding": cfg.padding,
        "normalization": cfg.normalization,
        "normalize_whitespace": cfg.normalize_whitespace,
        "bidi_reordering": cfg.bidi_reordering,
        "base_dir": cfg.base_dir,
        "legacy_polygons": legacy,
        "device": str(device),
        "precision": "32-true" if g.precision == "auto" else g.precision,
        "num_workers": g.num_workers,
        "num_threads": g.num_threads,
        "decoding": (f"beam {cfg.beam_size}, LM {cfg.lm} (weight {cfg.lm_weight}, bonus {cfg.lm_bonus})"
                     if cfg.lm else "greedy"),
    }


def _stderr_is_tty() -> bool:
    import sys

    return sys.stderr.isatty()


def load_test_records(cfg: TestConfig, model_meta: dict[str, Any]) -> tuple[list[LineRecord], list[SkippedItem]]:
    """The test lines of ``cfg``; for XML formats the line type defaults to the model's."""
    from scriba.data.sources import iter_records

    linetype = cfg.linetype
    if linetype is None and cfg.format_type in _XML_FORMATS:
        linetype = model_meta.get("seg_type") or "baselines"
    skipped: list[SkippedItem] = []
    records = list(iter_records(list(cfg.test_data), cfg.format_type, linetype=linetype, on_skip=skipped.append))
    return records, skipped


def run_test(cfg: TestConfig, g: GlobalConfig | None = None) -> EvaluationResult:
    """What ``ketos test`` does: check the options, evaluate ``cfg.model`` on ``cfg.test_data``, return the result
    to report (:func:`write_reports` writes the files ``cfg`` asks for)."""
    if not cfg.model:
        raise UsageError("no model to evaluate: give one with -m/--model")
    if not cfg.test_data:
        raise UsageError("no test data was given: use -e/--test-data or pass files as arguments")
    # training's glibc tuning: without it the line images' and activations' buffers are faulted in afresh
    # for every batch (system time of `ketos test` on froc's test split: 0.5-0.75 s with it, 0.95-1.4 s without)
    keep_freed_memory()
    return evaluate(cfg.model, list(cfg.test_data), cfg, g)


def write_reports(result: EvaluationResult, cfg: TestConfig) -> None:
    """Write the JSON and HTML reports that ``cfg`` asks for (each to a temporary name, then renamed)."""
    if cfg.output_json:
        from scriba.jobs.evaluate.report import write_json

        write_json(result, cfg.output_json)
    if cfg.output_html:
        from scriba.jobs.evaluate.report_html import write_html

        write_html(result, cfg.output_html)
