"""``ketos pretrain`` as a library call: :func:`pretrain` takes the configurations, returns a :class:`PretrainResult`.

The network (``spec``, or ``load``) is cut at its first recurrent layer; the convolutional front and the
recurrent encoder learn to tell the true (masked) frame from negatives of the same line. Checkpoints go to
``checkpoint_path`` as in training (``checkpoint_{epoch}-{val_loss}.ckpt``, ``checkpoint_last.ckpt``,
``checkpoint_abort.ckpt``); the best one is converted to ``best_<loss>.safetensors``, a complete
recognition model with a dummy 2-way output layer and codec ``{' ': [1]}`` that
``ketos train --load best_<loss>.safetensors --resize new`` fine-tunes on transcribed data.

``resume`` continues a run from its checkpoint with its own data split and options; only the machine
settings of ``GlobalConfig`` (device, workers, threads, verbosity) come from the caller.
"""

from __future__ import annotations

import logging
import math
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from scriba.config import QUIT_MODES, WEIGHTS_FORMATS, GlobalConfig, PretrainConfig, build
from scriba.errors import ScribaError, UsageError

logger = logging.getLogger(__name__)

TASK = "pretrain"


@dataclass
class PretrainResult:
    """What a pretraining run produced and why it stopped (``fixed``, ``early``, ``aneal``, ``interrupted``)."""

    output_dir: str
    weights: str | None = None
    best_loss: float | None = None
    best_checkpoint: str | None = None
    abort_checkpoint: str | None = None
    stopped: str = "fixed"
    epochs: int = 0
    steps: int = 0
    warmup_steps: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    split_file: str | None = None
    lines_per_second: list[float] = field(default_factory=list)
    train_lines: int = 0
    val_lines: int = 0


def check_config(cfg: PretrainConfig) -> PretrainConfig:
    """Rejects option values that cannot work, with the option's name in the message."""
    if cfg.quit not in QUIT_MODES:
        raise UsageError(f"invalid --quit {cfg.quit!r} (expected one of {', '.join(QUIT_MODES)})")
    if cfg.quit == "fixed" and cfg.epochs <= 0:
        raise UsageError("--quit fixed needs a positive number of --epochs")
    if cfg.freq <= 0 or (cfg.freq > 1 and cfg.freq != int(cfg.freq)):
        raise UsageError(f"--freq must be a fraction of an epoch or a whole number of epochs, got {cfg.freq}")
    if cfg.weights_format not in WEIGHTS_FORMATS:
        raise UsageError(f"invalid --weights-format {cfg.weights_format!r}")
    if cfg.batch_size < 1 or cfg.accumulate_grad_batches < 1:
        raise UsageError("--batch-size and --accumulate-grad-batches must be positive")
    if cfg.load and cfg.resume:
        raise UsageError("--load and --resume are mutually exclusive")
    if cfg.mask_width < 1:
        raise UsageError(f"--mask-width must be at least 1, got {cfg.mask_width}")
    if not 0.0 < cfg.mask_prob <= 1.0:
        raise UsageError(
            f"--mask-probability must lie in (0, 1], got {cfg.mask_prob}"
            + (" (nothing would be masked, so there would be nothing to learn)" if cfg.mask_prob == 0 else "")
        )
    if cfg.num_negatives < 1:
        raise UsageError(f"--num-negatives must be at least 1, got {cfg.num_negatives}")
    if not cfg.logit_temp > 0:
        raise UsageError(f"--logit-temp must be positive, got {cfg.logit_temp}")
    if cfg.warmup < 0 or cfg.min_delta < 0:
        raise UsageError("--warmup and --min-delta cannot be negative")
    if cfg.quit == "aneal":
        from scriba.train.optim import check_aneal

        check_aneal(cfg.schedule)
    return cfg


def warmup_steps(cfg: PretrainConfig) -> float:
    """``--warmup`` counts samples here; the schedules count optimizer steps."""
    return float(cfg.warmup) / (max(1, cfg.batch_size) * max(1, cfg.accumulate_grad_batches))


def _resume_configs(cfg: PretrainConfig, g: GlobalConfig) -> tuple[PretrainConfig, GlobalConfig, dict[str, Any]]:
    from scriba.weights.checkpoint import read_checkpoint_dict

    ckpt = read_checkpoint_dict(cfg.resume)  # type: ignore[arg-type]
    entry = ckpt.get("scriba") or {}
    if "pretrain_config" not in entry:
        raise ScribaError("not a scriba pretraining checkpoint (no pretraining configuration inside)", path=cfg.resume)
    stored = dict(entry["pretrain_config"])
    stored.update(resume=cfg.resume, load=None)
    gd = dict(entry.get("global_config") or {})
    gd.update(device=g.device, num_workers=g.num_workers, num_threads=g.num_threads, verbose=g.verbose)
    return build(PretrainConfig, stored), build(GlobalConfig, gd), ckpt


def _network(cfg: PretrainConfig, seg_type: str, ckpt: dict[str, Any] | None) -> Any:
    from scriba.pretrain.network import build_pretrain_model, prepare_loaded

    if ckpt is not None:
        from scriba.weights.checkpoint import model_from_checkpoint

        return model_from_checkpoint(ckpt, str(cfg.resume))
    if cfg.load:
        from scriba.weights import load_model

        net = prepare_loaded(load_model(cfg.load))
        logger.info("pretraining the loaded network %s (--spec is ignored)", net.spec)
        net.metadata["accuracy"] = []
        net.metadata["metrics"] = []
        return net
    return build_pretrain_model(cfg.spec, seg_type=seg_type, legacy_polygons=cfg.legacy_polygons)


def pretrain(
    cfg: PretrainConfig,
    g: GlobalConfig | None = None,
    *,
    callbacks: Sequence[Any] = (),
    progress: bool | None = None,
) -> PretrainResult:
    """Runs a complete pretraining job; see the module docstring. Raises :class:`~scriba.errors.ScribaError`."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from scriba.data.dataset import LineDataset
    from scriba.data.transforms import LineTransform
    from scriba.pretrain.data import collect_pretrain_lines
    from scriba.pretrain.module import PretrainModule, RelativeEarlyStopping
    from scriba.train.callbacks import Interrupted, LRScheduleCallback, RunState
    from scriba.train.datamodule import LineDataModule
    from scriba.train.job import _cache_limit, _devices, _preload, _prepare_output, _quiet_lightning, _write_split
    from scriba.train.optim import LRSchedule
    from scriba.train.progress import ProgressReporter

    g = g or GlobalConfig()
    ckpt: dict[str, Any] | None = None
    if cfg.resume:
        cfg, g, ckpt = _resume_configs(cfg, g)
    cfg = check_config(cfg)
    out = _prepare_output(cfg.checkpoint_path)
    torch.set_num_threads(max(1, g.num_threads))
    accelerator, devices = _devices(g.device)

    seed = g.seed
    if seed is None and g.deterministic:
        seed = 42
    if seed is not None:
        L.seed_everything(seed, workers=True, verbose=False)
    data_info: dict[str, Any] = dict((ckpt or {}).get("scriba", {}).get("data") or {})
    sampler_seed = int(data_info.get("sampler_seed", seed if seed is not None else random.randrange(2**31)))

    lines = collect_pretrain_lines(cfg, seed, split=data_info.get("split"))
    net = _network(cfg, lines.seg_type, ckpt)
    lt = LineTransform.from_model_input(tuple(net.input), padding=cfg.padding, seg_type=lines.seg_type)
    train_ds = LineDataset(
        lines.train, lt, None, legacy_polygons=cfg.legacy_polygons, augment=cfg.augment, texts=lines.train_texts
    )
    val_ds = LineDataset(lines.val, lt, None, legacy_polygons=cfg.legacy_polygons, texts=lines.val_texts)
    if train_ds.estimated_bytes() + val_ds.estimated_bytes() <= _cache_limit():
        train_ds = _preload(train_ds, "training", g.num_workers)
        val_ds = _preload(val_ds, "validation", g.num_workers)
        if len(train_ds) == 0:
            raise ScribaError("none of the training lines could be loaded")
        if len(val_ds) == 0:
            raise ScribaError("none of the validation lines could be loaded")
    if ckpt is None:
        net.metadata["seg_type"] = lines.seg_type
        net.metadata["legacy_polygons"] = cfg.legacy_polygons
        mode = train_ds.image_mode()
        net.metadata["one_channel_mode"] = mode if mode in ("1", "L") else None

    data_info.update(
        sampler_seed=sampler_seed,
        split=lines.split,
        train_lines=len(train_ds),
        validation_lines=len(val_ds),
        skipped=len(lines.skipped),
    )
    split_file = _write_split(out, lines.split)
    info = {"task": TASK, "pretrain_config": asdict(cfg), "global_config": asdict(g), "data": data_info}
    module = PretrainModule(
        net,
        cfg,
        mask_width=cfg.mask_width,
        mask_prob=cfg.mask_prob,
        num_negatives=cfg.num_negatives,
        logit_temp=cfg.logit_temp,
        info=info,
    )
    dm = LineDataModule(
        train_ds,
        val_ds,
        cfg.batch_size,
        num_workers=g.num_workers,
        seed=sampler_seed,
        pin_memory=accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available()),
    )

    ckpt_cb = ModelCheckpoint(
        dirpath=str(out),
        filename="checkpoint_{epoch:02d}-{val_loss:.4f}",
        monitor="val_loss",
        mode="min",
        save_top_k=10,
        save_last=True,
        auto_insert_metric_name=False,
    )
    ckpt_cb.CHECKPOINT_NAME_LAST = "checkpoint_last"
    warmup = warmup_steps(cfg)
    sched_cfg = replace(cfg, warmup=warmup)
    run_state = RunState(out, sampler=dm.train_sampler)
    reporter = ProgressReporter(
        rich=progress if progress is not None else (sys.stderr.isatty() and g.verbose == 0), metrics=("val_loss",)
    )
    cbs: list[Any] = [
        ckpt_cb,
        LRScheduleCallback(
            lambda spe: LRSchedule.from_config(sched_cfg, spe, mode="min"),
            monitor="val_loss",
            stop_when_annealed=cfg.quit == "aneal",
        ),
        run_state,
        reporter,
    ]
    early = None
    if cfg.quit == "early":
        early = RelativeEarlyStopping("val_loss", cfg.min_delta, cfg.lag)
        cbs.append(early)
    cbs.extend(callbacks)

    pl_logger: Any = False
    if cfg.pl_logger == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        pl_logger = TensorBoardLogger(save_dir=cfg.log_dir or os.getcwd(), name="ketos_pretrain")
    elif cfg.pl_logger:
        raise UsageError(f"unknown --logger {cfg.pl_logger!r} (expected tensorboard)")

    val_kw: dict[str, Any] = (
        {"check_val_every_n_epoch": int(cfg.freq), "val_check_interval": 1.0}
        if cfg.freq > 1
        else {"check_val_every_n_epoch": 1, "val_check_interval": float(cfg.freq)}
    )
    max_epochs = cfg.epochs if cfg.quit == "fixed" or (cfg.quit == "aneal" and cfg.epochs > 0) else -1
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        precision=g.precision,  # type: ignore[arg-type]
        max_epochs=max_epochs,
        # a fixed run is as long as asked; the minimum only holds back early stopping
        min_epochs=cfg.min_epochs if cfg.quit != "fixed" else None,
        gradient_clip_val=cfg.gradient_clip_val or None,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        callbacks=cbs,
        logger=pl_logger,
        log_every_n_steps=10,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic="warn" if g.deterministic else None,
        use_distributed_sampler=False,
        default_root_dir=str(out),
        **val_kw,
    )
    result = PretrainResult(
        output_dir=str(out),
        split_file=split_file,
        train_lines=len(train_ds),
        val_lines=len(val_ds),
        warmup_steps=warmup,
    )
    try:
        _quiet_lightning()
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.resume)
    except (SIGTERMException, KeyboardInterrupt, Interrupted):
        result.stopped = "interrupted"
    result.abort_checkpoint = run_state.abort_path
    result.history = list(module.history)
    result.epochs = trainer.current_epoch
    result.steps = trainer.global_step
    result.lines_per_second = list(reporter.lines_per_second)
    if result.stopped == "interrupted":
        logger.warning("pretraining interrupted; continue with: ketos pretrain --resume %s", result.abort_checkpoint)
        return result
    if early is not None and early.stopped_epoch > 0:
        result.stopped = "early"
    elif cfg.quit == "aneal" and trainer.should_stop:
        result.stopped = "aneal"
    else:
        result.stopped = cfg.quit if cfg.quit == "fixed" else "finished"
    _finish(result, ckpt_cb, cfg, out)
    return result


def _finish(result: PretrainResult, ckpt_cb: Any, cfg: PretrainConfig, out: Any) -> None:
    """Converts the best checkpoint to a weights file holding only the recognition network."""
    from scriba.weights import save_weights
    from scriba.weights.checkpoint import model_from_checkpoint, read_checkpoint_dict

    best = ckpt_cb.best_model_path
    score = ckpt_cb.best_model_score
    if not best or score is None or not math.isfinite(float(score)):
        logger.warning("no validation run finished with a loss: no best model to convert")
        return
    loss = float(score)
    model = model_from_checkpoint(read_checkpoint_dict(best), best)
    path = save_weights(model, out / f"best_{loss:.4f}.safetensors", cfg.weights_format)
    logger.info("converted best model %s (loss %.4f) to %s", best, loss, path)
    result.weights = str(path)
    result.best_loss = loss
    result.best_checkpoint = best
