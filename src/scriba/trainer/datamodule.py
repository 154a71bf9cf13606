"""Training data: records from the sources, text transforms, the train/validation split, and the loaders.

:func:`collect_lines` reads every source once and returns the transformed lines of both sets; the split
(explicit ``-e`` data, an automatic ``--partition`` split, or the split recorded in a checkpoint) is
described by line keys so that it can be written to the output directory and reused on ``--resume``.
:class:`LineDataModule` serves :class:`~scriba.data.dataset.LineDataset` objects through length-bucketed,
resumable loaders. Pretraining uses both with its own module (its lines need no transcription:
``collect_lines(..., require_text=False)``).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from scriba.config import DataConfig
from scriba.data.dataset import LineDataset, ignore_sigint
from scriba.data.records import LineRecord, SkippedItem
from scriba.data.sampler import LengthBucketSampler
from scriba.errors import NoDataError, ScribaError, UsageError

logger = logging.getLogger(__name__)

# training batches are padded to a multiple of this many pixels (see collate_training)
TRAIN_WIDTH_MULTIPLE = 64
# epochs whose batches run shortest lines first (curriculum; see LengthBucketSampler)
SORTED_FIRST_EPOCHS = 1


def record_key(rec: LineRecord) -> str:
    """A line's identity across runs: its file and its id inside that file."""
    return rec.id if rec.source == rec.id else f"{rec.source}#{rec.id}"


def text_transform(cfg: DataConfig) -> Any:
    from scriba.text import TextTransform

    return TextTransform(
        normalization=cfg.normalization,
        normalize_whitespace=cfg.normalize_whitespace,
        bidi_reordering=cfg.bidi_reordering,
        base_dir=cfg.base_dir,
    )


@dataclass
class LineSets:
    """The transformed lines of both sets and how they were split."""

    train: list[LineRecord]
    train_texts: list[str]
    val: list[LineRecord]
    val_texts: list[str]
    split: dict[str, Any] = field(default_factory=dict)
    skipped: list[SkippedItem] = field(default_factory=list)

    @property
    def seg_type(self) -> str:
        kinds = {r.kind for r in self.train}
        return "baselines" if "baselines" in kinds else "bbox"


def _read(paths: Sequence[str], cfg: DataConfig, skipped: list[SkippedItem], tt: Any) -> tuple[list, list]:
    """The lines of ``paths`` and their transformed texts; without ``tt`` (transcriptions unused) every line is
    kept, with its text as read."""
    from scriba.data.sources import iter_records

    if tt is None:
        if cfg.format_type == "path":
            records = list(_image_records(paths, skipped))
        else:
            records = list(iter_records(paths, cfg.format_type, cfg.linetype, on_skip=skipped.append))
        return records, [r.text for r in records]
    records, texts = [], []
    for rec in iter_records(paths, cfg.format_type, cfg.linetype, on_skip=skipped.append):
        explicit = getattr(tt, "base_dir", None)
        text = tt(rec.text, rec.base_dir if explicit is None else None)
        if not text:
            skipped.append(SkippedItem(rec.source, None if rec.id == rec.source else rec.id, "empty transcription"))
            continue
        records.append(rec)
        texts.append(text)
    return records, texts


def _image_records(paths: Sequence[str], skipped: list[SkippedItem]) -> Iterator[LineRecord]:
    """``path``-format lines without their transcriptions: the ``.gt.txt`` file, if any, is not even read."""
    for p in paths:
        if not os.path.isfile(p):
            skipped.append(SkippedItem(p, None, "file not found"))
            continue
        yield LineRecord(id=p, source=p, text="", image=p, kind="bbox")


def collect_lines(
    cfg: DataConfig, seed: int | None = None, split: dict[str, Any] | None = None, *, require_text: bool = True
) -> LineSets:
    """Reads training (and evaluation) data; splits by ``split`` (from a checkpoint) or by ``cfg.partition``.

    ``require_text=False`` is for data whose transcriptions go unused (pretraining): lines with empty text
    are kept, texts are left as read (untransformed), and a ``path``-format image needs no ``.gt.txt`` file.
    """
    if not cfg.training_data:
        raise NoDataError("no training data was given: use -t/--training-data or pass files as arguments")
    tt = text_transform(cfg) if require_text else None
    skipped: list[SkippedItem] = []
    train, train_texts = _read(cfg.training_data, cfg, skipped, tt)
    _report_skipped("training", skipped)
    if not train:
        raise NoDataError(
            f"no usable training lines in {len(cfg.training_data)} file(s) ({len(skipped)} item(s) left out; "
            f"is -f/--format-type {cfg.format_type!r} right?)"
        )
    info: dict[str, Any]
    if cfg.evaluation_data:
        n_skip = len(skipped)
        val, val_texts = _read(cfg.evaluation_data, cfg, skipped, tt)
        _report_skipped("validation", skipped[n_skip:])
        info = {"mode": "explicit", "train_lines": len(train), "validation_lines": len(val)}
    else:
        keys = [record_key(r) for r in train]
        if split and split.get("validation"):
            wanted = set(split["validation"])
            is_val = [k in wanted for k in keys]
            info = dict(split)
        else:
            if not 0.0 < cfg.partition < 1.0:
                raise UsageError(f"--partition must be between 0 and 1 without evaluation data, got {cfg.partition}")
            split_seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
            order = list(range(len(train)))
            random.Random(split_seed).shuffle(order)
            n_train = int(len(train) * cfg.partition)
            val_idx = set(order[n_train:])
            is_val = [i in val_idx for i in range(len(train))]
            info = {
                "mode": "partition",
                "partition": cfg.partition,
                "seed": split_seed,
                "train": [k for k, v in zip(keys, is_val) if not v],
                "validation": [k for k, v in zip(keys, is_val) if v],
            }
        val = [r for r, v in zip(train, is_val) if v]
        val_texts = [t for t, v in zip(train_texts, is_val) if v]
        train_texts = [t for t, v in zip(train_texts, is_val) if not v]
        train = [r for r, v in zip(train, is_val) if not v]
        if not train:
            raise NoDataError("the partition leaves no training lines; raise -p/--partition or add data")
    if not val:
        raise NoDataError(
            "no validation lines: give evaluation data with -e/--evaluation-data, or lower -p/--partition"
            if not cfg.evaluation_data
            else f"no usable validation lines in {len(cfg.evaluation_data)} evaluation file(s)"
        )
    return LineSets(train, train_texts, val, val_texts, info, skipped)


def _report_skipped(name: str, items: Sequence[SkippedItem], shown: int = 5) -> None:
    """One warning per set: the first few items by name, then a count."""
    if not items:
        return
    more = f" (and {len(items) - shown} more)" if len(items) > shown else ""
    logger.warning("%d %s item(s) left out: %s%s", len(items), name, "; ".join(str(i) for i in items[:shown]), more)


class _Tolerant(Dataset):
    """A training dataset view on which one unreadable line is left out of its batch instead of ending the run."""

    def __init__(self, ds: LineDataset) -> None:
        self.ds = ds
        self.reported: set[int] = set()

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key: Any) -> dict[str, Any] | None:
        try:
            return self.ds[key]
        except (ScribaError, OSError, ValueError) as exc:
            i = int(key[0]) if isinstance(key, tuple) else int(key)
            if i not in self.reported:
                self.reported.add(i)
                rec = self.ds.records[i]
                logger.warning("line left out of training: %s", SkippedItem(rec.source, rec.id, str(exc)))
            return None


def collate_or_none(samples: Sequence[dict[str, Any] | None], width_multiple: int = 1) -> dict[str, Any] | None:
    """``collate_lines`` without the lines that failed to load (None when a whole batch failed)."""
    from scriba.data.batching import collate_lines

    good = [s for s in samples if s is not None]
    if not good:
        return None
    return collate_lines(good, width_multiple=width_multiple)


def collate_training(samples: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Training batches are padded to a multiple of ``TRAIN_WIDTH_MULTIPLE`` pixels: the network masks the
    padding, so the loss is unchanged, but a few dozen distinct input widths instead of one per line keep
    oneDNN's convolution kernels in its primitive cache (1024 entries; with every line a new width, each step
    builds its kernels anew; 200 lines of distinct widths train about 20 % faster padded). Validation keeps
    exact widths, so that its figures equal ``ketos test``'s."""
    return collate_or_none(samples, width_multiple=TRAIN_WIDTH_MULTIPLE)


class StatefulLoader(DataLoader):
    """A DataLoader whose position in the epoch goes into Lightning checkpoints (through its batch sampler)."""

    def state_dict(self) -> dict[str, Any]:
        return self.batch_sampler.state_dict()  # type: ignore[union-attr]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batch_sampler.load_state_dict(state)  # type: ignore[union-attr]


class LineDataModule(L.LightningDataModule):
    """Train and validation loaders over ready datasets (build them with :func:`collect_lines`).

    Under DDP each process's loaders serve its shard (see :class:`LengthBucketSampler`): every process
    holds all lines but loads only its own; ``rank`` and ``world`` come from the trainer in :meth:`setup`.
    """

    def __init__(
        self,
        train: LineDataset,
        val: LineDataset,
        batch_size: int,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
        val_batch_size: int | None = None,
        in_process_when_cached: bool = False,
        micro_batch: int | None = None,
    ) -> None:
        super().__init__()
        self.train_set = train
        self.val_set = val
        self.batch_size = max(1, batch_size)
        self.val_batch_size = max(1, val_batch_size or batch_size)
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        # Cached lines cost a decompression per sample, nothing next to a CPU training step: worker processes
        # would only add memory and compete for the cores. Augmentation still goes to the workers.
        self.train_workers = num_workers
        self.val_workers = num_workers
        if in_process_when_cached:
            if train.cached and train.augmenter is None:
                self.train_workers = 0
            if val.cached:
                self.val_workers = 0
        self.train_sampler = LengthBucketSampler(
            train.estimated_widths(),
            self.batch_size,
            shuffle=True,
            seed=seed,
            with_seeds=train.augmenter is not None,
            micro_batch=micro_batch,
            sorted_epochs=SORTED_FIRST_EPOCHS,
        )
        self._train_loader: StatefulLoader | None = None
        self._val_loader: DataLoader | None = None
        self.rank, self.world = 0, 1

    def setup(self, stage: str) -> None:
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return
        self.rank, self.world = trainer.global_rank, trainer.world_size
        if len(self.val_set) < self.world or len(self.train_set) < self.world:
            raise UsageError(
                f"{self.world} processes need at least as many training and validation lines "
                f"({len(self.train_set)} and {len(self.val_set)})"
            )
        self.train_sampler.set_shard(self.rank, self.world, equal_steps=False)

    def _kwargs(self, workers: int) -> dict[str, Any]:
        return {
            "num_workers": workers,
            "persistent_workers": workers > 0,
            "pin_memory": self.pin_memory,
            # a private generator keeps loader start-up from consuming the global RNG (exact resumes)
            "generator": torch.Generator(),
            "worker_init_fn": ignore_sigint,
        }

    def train_dataloader(self) -> StatefulLoader:
        if self._train_loader is None:
            self._train_loader = StatefulLoader(
                _Tolerant(self.train_set),
                batch_sampler=self.train_sampler,
                collate_fn=collate_training,
                **self._kwargs(self.train_workers),
            )
        return self._train_loader

    def val_dataloader(self) -> DataLoader:
        if self._val_loader is None:
            sampler = LengthBucketSampler(self.val_set.estimated_widths(), self.val_batch_size, shuffle=False)
            # the same batches as in one process, dealt out: the summed error counts are the same too
            sampler.set_shard(self.rank, self.world, equal_steps=False)
            self._val_loader = DataLoader(
                _Tolerant(self.val_set),
                batch_sampler=sampler,
                collate_fn=collate_or_none,
                **self._kwargs(self.val_workers),
            )
        return self._val_loader
