"""``ketos test``: run a recognition model over ground truth and tally how well it reads.

This is the training data path cut after the network, without augmentation: records -> ``LineDataset`` (the
same image and text transforms as training) -> batches -> network -> ``scriba.decode`` -> ``scriba.metrics``.
Validation during training uses the same decode and :class:`~scriba.metrics.Tally`, so the numbers agree.

As in kraken, references get all text transforms (normalization, whitespace, bidi reordering to display
order) while predictions, which the network emits in display order already, get only normalization and
whitespace. The line type and legacy-polygon setting default to the model's.

Speed: lines are batched by similar width (``-B``) so that little padding is computed, images are prepared
in ``--workers`` processes, and edit distances are computed by rapidfuzz.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scriba.config import GlobalConfig, TestConfig
from scriba.data.records import LineRecord, SkippedItem
from scriba.errors import NoDataError, ScribaError, UsageError
from scriba.metrics import Tally, prediction_normalizer

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from scriba.vgsl import RecognitionModel

__all__ = ["EvaluationResult", "evaluate", "run_test", "write_reports"]


_XML_FORMATS = ("xml", "alto", "page")
# How many skipped lines a note lists by name before it only counts them.
_NOTE_EXAMPLES = 5


@dataclass
class EvaluationResult:
    """Everything a report needs: the tally, what was left out, and where the line images are."""

    model: str
    name: str
    tally: Tally
    settings: dict[str, Any] = field(default_factory=dict)
    skipped: list[SkippedItem] = field(default_factory=list)
    unencodable: Counter[str] = field(default_factory=Counter)
    unencodable_lines: int = 0
    seconds: float = 0.0
    records: Sequence[LineRecord] = field(default_factory=list, repr=False)
    legacy_polygons: bool = False
    image_loader: Callable[[int], Image.Image] | None = field(default=None, repr=False)

    @property
    def lines_per_second(self) -> float:
        return self.tally.lines_seen / self.seconds if self.seconds > 0 else 0.0

    def notes(self) -> list[str]:
        """One line per kind of problem, each reported once, for the end of the text report."""
        out = []
        if self.skipped:
            shown = "; ".join(str(s) for s in self.skipped[:_NOTE_EXAMPLES])
            more = f" (and {len(self.skipped) - _NOTE_EXAMPLES} more)" if len(self.skipped) > _NOTE_EXAMPLES else ""
            out.append(f"{len(self.skipped)} line(s) left out: {shown}{more}")
        if self.unencodable:
            chars = ", ".join(
                f"{c!r} (U+{ord(c):04X}) x{n}" if len(c) == 1 else f"{c!r} x{n}"
                for c, n in sorted(self.unencodable.items(), key=lambda kv: (-kv[1], kv[0]))
            )
            out.append(
                f"{self.unencodable_lines} line(s) contain characters the model cannot produce, "
                f"counted as errors: {chars}"
            )
        return out

    def line_image(self, index: int) -> Image.Image:
        """The line image of the ``index``-th evaluated record (extracted again; nothing is kept in memory)."""
        if self.image_loader is not None:
            return self.image_loader(index)
        from scriba.data.extract import load_line_image

        return load_line_image(self.records[index], legacy_polygons=self.legacy_polygons)


# -- helpers --------------------------------------------------------------------------------------------------


def _device(spec: str) -> torch.device:
    import torch

    if spec in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    first = spec.split(",")[0].strip()
    try:
        dev = torch.device(first)
    except RuntimeError as exc:
        raise UsageError(f"invalid device {spec!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {spec!r} requested but no CUDA device is available")
    return dev


def _autocast_dtype(precision: str) -> torch.dtype | None:
    import torch

    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16") or precision.startswith("transformer-engine"):
        return torch.float16
    return None


def _batches(dataset: Any, batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar width, widest first (little padding computed)."""
    n = len(dataset)
    widths = getattr(dataset, "estimated_widths", None)
    if batch_size <= 1 or widths is None:
        return [[i] for i in range(n)]
    est = widths()
    order = sorted(range(n), key=lambda i: -est[i])
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


class _Guarded:
    """Dataset view that turns a line that cannot be loaded into a skip instead of aborting the run."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            sample = dict(self.dataset[i])
        except (ScribaError, OSError, ValueError) as exc:
            return {"index": i, "error": str(exc) or type(exc).__name__}
        sample["index"] = i
        return sample


def _collate(
    samples: list[dict[str, Any]],
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[tuple[int, str]]]:
    from scriba.data.batching import collate_lines

    bad = [(s["index"], s["error"]) for s in samples if "error" in s]
    good = [s for s in samples if "error" not in s]
    empty = [s for s in good if not s["text"]]
    bad += [(s["index"], "empty transcription") for s in empty]
    good = [s for s in good if s["text"]]
    if not good:
        return None, [], bad
    # Widest first: rows then match ``good`` one to one (collate_lines keeps our order with sort=False).
    good.sort(key=lambda s: -s["image"].shape[-1])
    batch = collate_lines([{k: v for k, v in s.items() if k != "index"} for s in good], sort=False)
    return batch, [{"index": s["index"], "text": s["text"], "id": s["id"]} for s in good], bad


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
    model: RecognitionModel,
    records_or_dataset: Sequence[LineRecord] | Any,
    cfg: TestConfig,
    g: GlobalConfig | None = None,
    *,
    skipped: list[SkippedItem] | None = None,
    progress: bool | None = None,
) -> EvaluationResult:
    """Evaluate ``model`` on line records (or a ready ``LineDataset``) and return the tally and notes."""
    import torch
    from torch.utils.data import DataLoader

    from scriba.data.dataset import ignore_sigint
    from scriba.decode import decode_text

    g = g or GlobalConfig()
    start = time.perf_counter()
    skipped = list(skipped or [])
    meta = getattr(model, "metadata", {}) or {}
    legacy = False if cfg.no_legacy_polygons else bool(meta.get("legacy_polygons", False))

    if isinstance(records_or_dataset, Sequence) and (
        not records_or_dataset or isinstance(records_or_dataset[0], LineRecord)
    ):
        records: Sequence[LineRecord] | None = records_or_dataset
        dataset = _build_dataset(model, records_or_dataset, cfg, legacy)
    else:
        dataset = records_or_dataset
        records = getattr(dataset, "records", None)
    if len(dataset) == 0:
        raise NoDataError("the test set has no lines")

    pred_transform = prediction_normalizer(cfg.normalization, cfg.normalize_whitespace)
    unencodable = _Unencodable(model.codec)
    device = _device(g.device)
    amp = _autocast_dtype(g.precision)
    loader = DataLoader(
        _Guarded(dataset),
        batch_sampler=_batches(dataset, max(1, cfg.batch_size)),
        num_workers=max(0, g.num_workers),
        collate_fn=_collate,
        worker_init_fn=ignore_sigint,  # Ctrl-C is the main process's to handle, without a traceback per worker
        pin_memory=device.type == "cuda",
    )
    tally = Tally()
    missing_chars: Counter[str] = Counter()
    missing_lines = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, g.num_threads))
    was_training = model.training
    model.eval()
    model.to(device)
    if g.precision == "64-true":
        model.double()
    show = progress if progress is not None else (g.verbose == 0 and _stderr_is_tty())
    bar = _Bar(len(dataset)) if show else None
    try:
        with torch.inference_mode():
            for batch, good, bad in loader:
                for i, reason in bad:
                    rec = records[i] if records is not None else None
                    skipped.append(SkippedItem(rec.source if rec else "dataset", rec.id if rec else str(i), reason))
                if batch is not None:
                    texts = _predict(model, batch, device, amp, g.precision, decode_text)
                    for s, pred in zip(good, texts):
                        ref = s["text"]
                        miss = unencodable(ref)
                        if miss:
                            missing_lines += 1
                            missing_chars.update(c for c in ref if c in miss)
                        rec = records[s["index"]] if records is not None else None
                        tally.add(ref, pred_transform(pred), s["id"], rec.source if rec else None, s["index"])
                if bar is not None:
                    bar.advance(len(good) + len(bad))
    finally:
        if bar is not None:
            bar.close()
        torch.set_num_threads(threads)
        model.train(was_training)
    if tally.lines_seen == 0:
        raise NoDataError(f"none of the {len(dataset)} test lines could be evaluated ({skipped[0]})")
    return EvaluationResult(
        model=str(getattr(model, "path", "") or ""),
        name=str(meta.get("name", "") or ""),
        tally=tally,
        settings=_settings(cfg, g, legacy, device),
        skipped=skipped,
        unencodable=missing_chars,
        unencodable_lines=missing_lines,
        seconds=time.perf_counter() - start,
        records=records if records is not None else [],
        legacy_polygons=legacy,
        image_loader=_dataset_image_loader(dataset),
    )


def _build_dataset(model: RecognitionModel, records: Sequence[LineRecord], cfg: TestConfig, legacy: bool) -> Any:
    from scriba.data.dataset import LineDataset
    from scriba.data.transforms import LineTransform
    from scriba.text import TextTransform

    # Centre-line normalisation depends on the data's line type (bbox lines get it), as in kraken.
    seg_type = records[0].kind if records else "bbox"
    line_transform = LineTransform.from_model_input(tuple(model.input), cfg.padding, seg_type)
    text_transform = TextTransform(
        normalization=cfg.normalization,
        normalize_whitespace=cfg.normalize_whitespace,
        bidi_reordering=cfg.bidi_reordering,
        base_dir=cfg.base_dir,
    )
    return LineDataset(list(records), line_transform, text_transform, codec=None, legacy_polygons=legacy)


def _predict(
    model: Any, batch: dict[str, Any], device: torch.device, amp: torch.dtype | None, precision: str, decode: Any
) -> list[str]:
    import torch

    images = batch["images"].to(device, non_blocking=True)
    seq_lens = batch["seq_lens"].to(device)
    if precision == "64-true":
        images = images.double()
    if amp is not None:
        with torch.autocast(device_type=device.type, dtype=amp):
            logits, lens = model(images, seq_lens)
    else:
        logits, lens = model(images, seq_lens)
    return [p.text for p in decode(logits.float(), lens, model.codec)]


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
    }


def _stderr_is_tty() -> bool:
    import sys

    return sys.stderr.isatty()


class _Bar:
    """A rich progress bar on stderr (only when someone is watching a terminal)."""

    def __init__(self, total: int):
        from rich.progress import Progress

        self.progress = Progress(transient=True)
        self.progress.start()
        self.task = self.progress.add_task("evaluating", total=total)

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def close(self) -> None:
        self.progress.stop()


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
    """What ``ketos test`` does: load the model and the data, evaluate, return the result to report."""
    from scriba.weights import load_model

    g = g or GlobalConfig()
    _keep_freed_memory()
    if not cfg.model:
        raise UsageError("no model to evaluate: give one with -m/--model")
    if not cfg.test_data:
        raise UsageError("no test data was given: use -e/--test-data or pass files as arguments")
    model = load_model(cfg.model)
    meta = getattr(model, "metadata", {}) or {}
    records, skipped = load_test_records(cfg, meta)
    if not records:
        why = f" ({len(skipped)} skipped; first: {skipped[0]})" if skipped else ""
        raise NoDataError(f"the test set has no lines{why}", path=cfg.test_data[0] if len(cfg.test_data) == 1 else None)
    result = evaluate(model, records, cfg, g, skipped=skipped)
    result.model = str(cfg.model)
    result.name = Path(cfg.model).name
    return result


def _keep_freed_memory() -> None:
    """Lets glibc keep freed memory for reuse (up to 256 MiB) instead of returning it to the system.

    By default every buffer over 128 KiB (a line image's filter output, an activation) is mapped fresh and
    unmapped when freed, so each new one costs page faults: on these machines that made the centerline
    filters 3x slower than their arithmetic, and ``ketos test`` ~10 % slower overall (peak RSS unchanged
    at -B 1, +8 % at -B 16). DataLoader workers fork from this process and inherit the setting.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        pass


def write_reports(result: EvaluationResult, cfg: TestConfig) -> None:
    """Write the JSON and HTML reports that ``cfg`` asks for (each to a temporary name, then renamed)."""
    if cfg.output_json:
        from scriba.jobs.evaluate.report import write_json

        write_json(result, cfg.output_json)
    if cfg.output_html:
        from scriba.jobs.evaluate.report_html import write_html

        write_html(result, cfg.output_html)
