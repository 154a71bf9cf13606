"""The one inference path: model + line preprocessing + batching + device/precision + greedy decoding.

``ketos test`` (:mod:`scriba.jobs.evaluate.job`), validation during training
(:mod:`scriba.jobs.train.module`) and Python users all go through :class:`Recognizer`, so that a line is
prepared, batched, run and decoded the same way everywhere: the same weights on the same lines give the
same text, whoever asks and whatever the batch size.

- :meth:`Recognizer.decode_batch` runs the network on one collated batch and decodes it;
  :meth:`Recognizer.score_batch` adds the decoded lines to a :class:`~scriba.metrics.Tally`. Validation calls
  ``score_batch`` on the batches Lightning's loop hands it; ``ketos test`` on those of :meth:`iter_batches`.
- :meth:`Recognizer.iter_batches` batches a dataset by similar width (little padding computed), prepares
  lines in ``num_workers`` processes, and turns a line that cannot be loaded into a skip, not an abort.
- :meth:`predict` (line images or their paths), :meth:`predict_records` and :meth:`predict_files` (ALTO/PageXML
  pages, ``.arrow`` datasets, line images with or without transcriptions) are for Python users.

Batching does not change predictions: padding frames are zeros and every layer honours the lines' lengths.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from scriba.data.records import LineRecord, SkippedItem
from scriba.decode import Prediction
from scriba.errors import InputError, ModelError, ScribaError, SpecError, UsageError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from scriba.metrics import Tally
    from scriba.vgsl import RecognitionModel

__all__ = ["Recognizer", "autocast_dtype", "inference_device", "width_batches"]

_XML_FORMATS = ("xml", "alto", "page")


def inference_device(spec: str | None = "auto") -> torch.device:
    """The torch device of a ``--device`` value (the first of a list); ``auto`` picks CUDA when present."""
    import torch

    if spec in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    first = str(spec).split(",")[0].strip()
    try:
        dev = torch.device(first)
    except RuntimeError as exc:
        raise UsageError(f"invalid device {spec!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {spec!r} requested but no CUDA device is available")
    return dev


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast type of a Lightning precision string; None for full precision (32 and 64 bits)."""
    import torch

    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16") or precision.startswith("transformer-engine"):
        return torch.float16
    return None


def width_batches(widths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar width, widest first, so that little padding is computed."""
    if batch_size <= 1:
        return [[i] for i in range(len(widths))]
    order = sorted(range(len(widths)), key=lambda i: -widths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class Recognizer:
    """Reads text lines with a recognition model.

    ``model`` is a :class:`~scriba.vgsl.RecognitionModel` or the path of a weights file or checkpoint.
    ``device`` is a ``--device`` value (``None``: wherever the model is, as during training); ``precision``
    a ``--precision`` value (``auto`` and ``32-true``: full precision). ``legacy_polygons`` defaults to
    the model's setting.

    >>> from glob import glob
    >>> from scriba import Recognizer
    >>> rec = Recognizer(weights, batch_size=16)  # e.g. the best_*.safetensors that scriba.train wrote
    >>> predictions = rec.predict(sorted(glob("examples/froc_sample/test/*.png"))[:3])
    >>> [type(p.text).__name__ for p in predictions], len(predictions[0].confidences) == len(predictions[0].text)
    (['str', 'str', 'str'], True)
    >>> lines = rec.predict_files("examples/froc_sample/test.lst", format_type="path")  # or pages, .arrow files
    >>> record, prediction = lines[0]  # each line's record (file, page, transcription, ...) and its prediction
    >>> len(lines), record.source.endswith("test/BnF_fr_854_Chansonnier-I_0140_05.png")
    (49, True)
    """

    def __init__(
        self,
        model: RecognitionModel | str | os.PathLike[str],
        *,
        device: str | None = "auto",
        precision: str = "32-true",
        batch_size: int = 16,
        padding: int = 16,
        num_workers: int = 0,
        num_threads: int | None = None,
        legacy_polygons: bool | None = None,
        lm: str | None = None,
        lm_weight: float = 1.5,
        lm_bonus: float = 2.5,
        beam_size: int = 16,
    ) -> None:
        if model is None:
            raise UsageError("no model given to the recognizer")
        if isinstance(model, (str, os.PathLike)):
            from scriba.weights import load_model

            model = load_model(model)
        if getattr(model, "codec", None) is None:
            raise ModelError("the model has no codec; it cannot decode text", path=str(getattr(model, "path", "")) or None)
        if batch_size < 1:
            raise UsageError(f"the batch size must be positive, got {batch_size}")
        self.model = model
        self.device = inference_device(device) if device is not None else None
        self.precision = "32-true" if precision == "auto" else precision
        self.amp = autocast_dtype(self.precision)
        self.batch_size = batch_size
        self.padding = padding
        self.num_workers = max(0, num_workers)
        self.num_threads = num_threads
        meta = getattr(model, "metadata", {}) or {}
        self.legacy_polygons = bool(meta.get("legacy_polygons", False)) if legacy_polygons is None else legacy_polygons
        self._beam: Any = None
        if lm is not None:
            from scriba.lm.beam import BeamSettings, ParallelBeamDecoder
            from scriba.lm.lmfile import check_language_model

            labels = check_language_model(lm, self.model.codec)  # type: ignore[arg-type]  # checked above
            settings = BeamSettings(lm, labels, lm_weight=lm_weight, token_bonus=lm_bonus, beam_size=beam_size)
            # flashlight's search holds the GIL: several worker processes when the user gave threads to spare
            self._beam = ParallelBeamDecoder(settings, processes=max(1, num_threads or 1))

    # -- one batch ---------------------------------------------------------------------------------------------

    def decode_batch(self, batch: dict[str, Any]) -> list[Prediction]:
        """The network on a collated batch (``images``, ``seq_lens``), decoded greedily (or by beam search with
        the language model); rows in batch order.

        Autocast is chosen here, from ``precision``, whatever the caller's context: validation inside a bf16
        training run computes in full precision, as ``ketos test`` does on the saved weights.
        """
        from scriba.decode import decode_text, predictions

        logits, lens = self._forward(batch)
        codec: Any = self.model.codec
        if self._beam is not None:
            return predictions(self._beam.decode_all(_line_log_probs(logits, lens)), codec)
        return decode_text(logits.float(), lens, codec)

    def log_posteriors(self, batch: dict[str, Any]) -> list[Any]:
        """Each row's ``(T, C)`` natural-log posteriors (numpy, frames by labels, blank first) for a beam
        search: what :func:`scriba.lm.tune.tune_lm` takes."""
        return _line_log_probs(*self._forward(batch))

    def _forward(self, batch: dict[str, Any]) -> tuple[Any, Any]:
        import torch

        device = self.device if self.device is not None else _device_of(self.model)
        images = batch["images"].to(device, non_blocking=True)
        seq_lens = batch["seq_lens"].to(device)
        if self.precision == "64-true":
            images = images.double()
        with torch.autocast(device.type, dtype=self.amp, enabled=self.amp is not None):
            logits, lens = self.model(images, seq_lens)
        if logits.dim() != 4 or logits.shape[2] != 1:
            raise SpecError(
                f"the network's output has height {logits.shape[2] if logits.dim() == 4 else '?'}, CTC needs 1: "
                f"fold the height into channels (e.g. S1(1x0)1,3) before the recurrent layers"
            )
        if self.model.codec is None:
            raise ModelError("the model has no codec: it cannot turn its outputs into text")
        return logits, lens

    def close(self) -> None:
        """Ends the language model's worker processes, if any."""
        if self._beam is not None:
            self._beam.close()

    def score_batch(
        self, batch: dict[str, Any], tally: Tally, pred_transform: Callable[[str], str] | None = None
    ) -> list[Prediction]:
        """:meth:`decode_batch`, then each line into ``tally`` (reference ``texts``; predictions through
        ``pred_transform``, e.g. :func:`~scriba.metrics.prediction_normalizer`). Returns the predictions."""
        preds = self.decode_batch(batch)
        n = len(preds)
        ids = batch.get("ids") or [None] * n
        sources = batch.get("sources") or [None] * n
        indices = batch.get("indices") or [None] * n
        for ref, pred, line_id, source, index in zip(batch["texts"], preds, ids, sources, indices):
            text = pred_transform(pred.text) if pred_transform is not None else pred.text
            tally.add(ref, text, line_id, source, index)
        return preds

    # -- many batches ------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Inference mode with the model in eval mode on its device (and threads, precision) for a loop over
        batches; the model's mode, dtype and the thread count are restored afterwards."""
        import torch

        model = self.model
        was_training = model.training
        threads = torch.get_num_threads()
        dtype = next(model.parameters()).dtype
        if self.num_threads:
            torch.set_num_threads(max(1, self.num_threads))
        model.eval()
        if self.device is not None:
            model.to(self.device)
        if self.precision == "64-true":
            model.double()
        try:
            with torch.inference_mode():
                yield
        finally:
            model.to(dtype)
            model.train(was_training)
            torch.set_num_threads(threads)

    def iter_batches(
        self, dataset: Any, *, require_text: bool = False, progress: bool = False
    ) -> Iterator[tuple[dict[str, Any] | None, list[tuple[int, str]]]]:
        """Collated batches of ``dataset`` (a :class:`~scriba.data.dataset.LineDataset` or any dataset of such
        samples), grouped by width, with the ``(index, reason)`` of the lines that could not be loaded (and, with
        ``require_text``, of those without text). A batch is None when none of its lines could be used;
        ``batch["indices"]`` holds the dataset indices of its rows."""
        from torch.utils.data import DataLoader

        from scriba.data.dataset import ignore_sigint

        widths = dataset.estimated_widths() if hasattr(dataset, "estimated_widths") else [0] * len(dataset)
        device = self.device if self.device is not None else _device_of(self.model)
        guarded: Any = _Guarded(dataset)  # a map-style dataset, duck-typed
        loader: DataLoader[Any] = DataLoader(
            guarded,
            batch_sampler=width_batches(widths, self.batch_size),
            num_workers=self.num_workers,
            collate_fn=functools.partial(_collate, require_text=require_text),
            worker_init_fn=ignore_sigint,  # Ctrl-C is the main process's to handle, without a traceback per worker
            pin_memory=device.type == "cuda",
        )
        bar = _Bar(len(dataset)) if progress else None
        try:
            for batch, bad in loader:
                yield batch, bad
                if bar is not None:
                    bar.advance(len(bad) + (len(batch["texts"]) if batch is not None else 0))
        finally:
            if bar is not None:
                bar.close()

    def dataset(self, records: Sequence[LineRecord], text_transform: Callable[..., str] | None = None) -> Any:
        """A :class:`~scriba.data.dataset.LineDataset` of ``records`` prepared for this model (bbox lines, such as
        line images, get centre-line normalisation, as in kraken)."""
        from scriba.data.dataset import LineDataset
        from scriba.data.transforms import LineTransform

        seg_type = records[0].kind if records else "bbox"
        lt = LineTransform.from_model_input(_input_shape(self.model), self.padding, seg_type)
        return LineDataset(list(records), lt, text_transform, codec=None, legacy_polygons=self.legacy_polygons)

    # -- for Python users --------------------------------------------------------------------------------------

    def predict(self, lines: Sequence[Image.Image | str | os.PathLike[str]]) -> list[Prediction]:
        """Reads line images (PIL images or image files), in the order given.

        Image files are prepared exactly as ``ketos test -f path`` prepares them; PIL images are taken as they
        are. Raises :class:`~scriba.errors.InputError` naming the first line that cannot be read.
        """
        from scriba.data.transforms import LineTransform

        lt = LineTransform.from_model_input(_input_shape(self.model), self.padding, "bbox")
        images = _Images(list(lines), lt)
        return self._predict_all(images, [images.name(i) for i in range(len(images))])

    def predict_records(self, records: Sequence[LineRecord]) -> list[Prediction]:
        """Reads the lines of ``records`` (from :func:`scriba.data.sources.iter_records`), in the order given."""
        if not records:
            return []
        return self._predict_all(self.dataset(records), [f"{r.source} ({r.id})" for r in records])

    def predict_files(
        self, paths: Sequence[str | os.PathLike[str]] | str, format_type: str = "xml", linetype: str | None = None
    ) -> list[tuple[LineRecord, Prediction]]:
        """Reads every line of ALTO/PageXML pages (``xml``, ``alto``, ``page``), ``.arrow`` datasets (``binary``)
        or line images (``path``); ``paths`` may hold files, globs and manifests.

        For pages the line type defaults to the model's (baselines when it has none). Lines that cannot be
        read are logged and left out; the others come back with their records, in input order.
        """
        from scriba.data.sources import iter_records, resolve_inputs, warn_skip

        if format_type in _XML_FORMATS and linetype is None:
            linetype = (getattr(self.model, "metadata", {}) or {}).get("seg_type") or "baselines"
        if format_type == "path":
            records = [_image_record(p) for p in resolve_inputs(paths)]
        else:
            records = list(iter_records(resolve_inputs(paths), format_type, linetype=linetype))
        if not records:
            return []
        out: list[tuple[LineRecord, Prediction]] = []
        with self.session():
            for batch, bad in self.iter_batches(self.dataset(records)):
                for i, reason in bad:
                    warn_skip(SkippedItem(records[i].source, records[i].id, reason))
                if batch is not None:
                    out.extend((records[i], p) for i, p in zip(batch["indices"], self.decode_batch(batch)))
        order = {id(r): k for k, r in enumerate(records)}
        out.sort(key=lambda rp: order[id(rp[0])])
        return out

    def _predict_all(self, dataset: Any, names: Sequence[str]) -> list[Prediction]:
        preds: list[Prediction | None] = [None] * len(dataset)
        with self.session():
            for batch, bad in self.iter_batches(dataset):
                if bad:
                    i, reason = bad[0]
                    raise InputError(f"line cannot be read: {reason}", path=names[i])
                if batch is not None:
                    for i, p in zip(batch["indices"], self.decode_batch(batch)):
                        preds[i] = p
        return [p for p in preds if p is not None]


# -- the pieces of the loop ------------------------------------------------------------------------------------


def _line_log_probs(logits: Any, lens: Any) -> list[Any]:
    import torch

    log_probs = torch.log_softmax(logits.detach().float().squeeze(2), dim=1).cpu()
    return [log_probs[i, :, : int(n)].T.contiguous().numpy() for i, n in enumerate(lens.cpu().tolist())]


def _device_of(model: Any) -> torch.device:
    return next(model.parameters()).device


def _image_record(path: str) -> LineRecord:
    """A line image with its transcription when there is one (``<stem>.gt.txt``), else with empty text."""
    from scriba.data.sources import read_path_record

    try:
        return read_path_record(path)
    except InputError:
        return LineRecord(id=path, source=path, text="", image=path, kind="bbox")


def _input_shape(model: RecognitionModel) -> tuple[int, int, int, int]:
    b, c, h, w = model.input
    return int(b), int(c), int(h), int(w)


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


def _collate(samples: list[dict[str, Any]], require_text: bool) -> tuple[dict[str, Any] | None, list[tuple[int, str]]]:
    from scriba.data.batching import collate_lines

    bad = [(s["index"], s["error"]) for s in samples if "error" in s]
    good = [s for s in samples if "error" not in s]
    if require_text:
        bad += [(s["index"], "empty transcription") for s in good if not s.get("text")]
        good = [s for s in good if s.get("text")]
    if not good:
        return None, bad
    batch = collate_lines([{k: v for k, v in s.items() if k != "index"} for s in good], sort=True)
    batch["indices"] = [good[k]["index"] for k in batch["order"]]
    return batch, bad


class _Images:
    """Line images (PIL images or image files) as ``LineDataset``-like samples."""

    def __init__(self, images: list[Any], line_transform: Any):
        self.images = images
        self.line_transform = line_transform

    def __len__(self) -> int:
        return len(self.images)

    def _image(self, i: int) -> Image.Image:
        im = self.images[i]
        if isinstance(im, (str, os.PathLike)):
            from scriba.data.extract import open_page

            return open_page(os.fspath(im))
        return im

    def name(self, i: int) -> str:
        im = self.images[i]
        return os.fspath(im) if isinstance(im, (str, os.PathLike)) else f"image {i}"

    def __getitem__(self, i: int) -> dict[str, Any]:
        name = self.name(i)
        return {"image": self.line_transform(self._image(i)), "text": "", "id": name, "source": name}

    def estimated_widths(self) -> list[int]:
        from PIL import Image

        lt = self.line_transform
        widths = []
        for im in self.images:
            try:
                if isinstance(im, (str, os.PathLike)):
                    with Image.open(im) as f:
                        w, h = f.size
                else:
                    w, h = im.size
            except (OSError, ValueError, AttributeError):
                w, h = 0, 0
            widths.append(int(w * lt.height / h) + 2 * lt.padding if lt.height and h else int(w))
        return widths


class _Bar:
    """A rich progress bar on stderr (only when someone is watching a terminal)."""

    def __init__(self, total: int):
        from rich.progress import Progress

        self.progress = Progress(transient=True)
        self.progress.start()
        self.task = self.progress.add_task("recognizing", total=total)

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def close(self) -> None:
        self.progress.stop()
