"""Unlabelled lines for pretraining: like training data, but a transcription is neither needed nor used.

Differences from :func:`scriba.train.datamodule.collect_lines`: lines with empty text are kept, and in
``path`` mode an image without a ``.gt.txt`` file is a line like any other. The split (explicit ``-e`` data
or ``--partition``) is the same and is recorded the same way, so ``--resume`` reuses it.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator, Sequence
from typing import Any

from scriba.config import DataConfig
from scriba.data.records import LineRecord, SkippedItem
from scriba.errors import NoDataError, UsageError
from scriba.train.datamodule import LineSets, record_key

logger = logging.getLogger(__name__)


def _path_records(paths: Sequence[str], skipped: list[SkippedItem]) -> Iterator[LineRecord]:
    for p in paths:
        if not os.path.isfile(p):
            skipped.append(SkippedItem(p, None, "file not found"))
            continue
        # the .gt.txt file, if any, is not even read: pretraining has no use for it
        yield LineRecord(id=p, source=p, text="", image=p, kind="bbox")


def read_lines(paths: Sequence[str], cfg: DataConfig, skipped: list[SkippedItem]) -> list[LineRecord]:
    if cfg.format_type == "path":
        return list(_path_records(paths, skipped))
    from scriba.data.sources import iter_records

    return list(iter_records(paths, cfg.format_type, cfg.linetype, on_skip=skipped.append))


def collect_pretrain_lines(cfg: DataConfig, seed: int | None = None, split: dict[str, Any] | None = None) -> LineSets:
    """Training and validation lines; split by ``split`` (from a checkpoint) or by ``cfg.partition``."""
    if not cfg.training_data:
        raise NoDataError("no training data was given: use -t/--training-data or pass files as arguments")
    skipped: list[SkippedItem] = []
    train = read_lines(cfg.training_data, cfg, skipped)
    if not train:
        raise NoDataError(
            f"no usable lines in {len(cfg.training_data)} file(s) ({len(skipped)} item(s) left out; "
            f"is -f/--format-type {cfg.format_type!r} right?)"
        )
    info: dict[str, Any]
    if cfg.evaluation_data:
        val = read_lines(cfg.evaluation_data, cfg, skipped)
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
            val_idx = set(order[int(len(train) * cfg.partition) :])
            is_val = [i in val_idx for i in range(len(train))]
            info = {
                "mode": "partition",
                "partition": cfg.partition,
                "seed": split_seed,
                "train": [k for k, v in zip(keys, is_val) if not v],
                "validation": [k for k, v in zip(keys, is_val) if v],
            }
        val = [r for r, v in zip(train, is_val) if v]
        train = [r for r, v in zip(train, is_val) if not v]
        if not train:
            raise NoDataError("the partition leaves no training lines; raise -p/--partition or add data")
    for item in skipped:
        logger.warning("left out: %s", item)
    if not val:
        raise NoDataError(
            "no validation lines: give evaluation data with -e/--evaluation-data, or lower -p/--partition"
            if not cfg.evaluation_data
            else f"no usable validation lines in {len(cfg.evaluation_data)} evaluation file(s)"
        )
    return LineSets(train, [r.text for r in train], val, [r.text for r in val], info, skipped)
