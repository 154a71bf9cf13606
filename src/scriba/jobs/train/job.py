"""``ketos train`` as a library call: :func:`train` takes the configurations and returns a :class:`TrainResult`.

From scratch (``spec``), fine-tuning (``load`` + ``resize``) or continuing (``resume``: everything, data
and hyperparameters included, comes from the checkpoint; only the machine settings of ``GlobalConfig``
(device, workers, threads, verbosity, cache budget, micro-batches, weight-gradient layout) are taken from
the caller).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from scriba import machine
from scriba.config import RESIZE_ALIASES, RESIZE_MODES, GlobalConfig, TrainConfig, check_numbers
from scriba.data.sources import resolve_inputs
from scriba.errors import NoDataError, ScribaError, UsageError
from scriba.trainer import cluster, outcome, runtime
from scriba.trainer.runtime import PARTITION_FILE as PARTITION_FILE

logger = logging.getLogger(__name__)

PLOT_FILE = "training_curves.png"


@dataclass
class TrainResult(outcome.RunResult):
    """A training run's :class:`~scriba.trainer.outcome.RunResult`, with its best validation accuracy."""

    best_accuracy: float | None = None
    plot: str | None = None
    train_lines: int = 0
    val_lines: int = 0


def _check_config(cfg: TrainConfig) -> TrainConfig:
    check_numbers(cfg)
    runtime.check_run_options(cfg)
    if cfg.aux_ctc < 0:
        raise UsageError(f"--aux-ctc must be a loss weight, 0 or more, got {cfg.aux_ctc}")
    if not 0.0 <= cfg.ema < 1.0:
        raise UsageError(f"--ema must be a decay in [0, 1), got {cfg.ema}")
    if cfg.resize not in RESIZE_MODES:
        raise UsageError(f"invalid --resize {cfg.resize!r} (expected one of {', '.join(RESIZE_MODES)})")
    if cfg.resize in RESIZE_ALIASES:
        logger.warning("--resize %s is deprecated; use %s", cfg.resize, RESIZE_ALIASES[cfg.resize])
        cfg.resize = RESIZE_ALIASES[cfg.resize]
    if isinstance(cfg.codec, str):  # a codec file: read (and refused if bad) before anything is written
        from scriba.codec import load_codec_file

        cfg = replace(cfg, codec=load_codec_file(cfg.codec))
    return cfg


def _codec_and_model(cfg: TrainConfig, texts: Sequence[str], seg_type: str, ckpt: dict[str, Any] | None) -> Any:
    from scriba.codec import Codec
    from scriba.vgsl import build_model

    if ckpt is not None:
        from scriba.weights.checkpoint import model_from_checkpoint

        return model_from_checkpoint(ckpt, str(cfg.resume))
    if cfg.load:
        from scriba.weights import load_model

        if cfg.codec is not None and cfg.resize != "new":
            raise UsageError("-c/--codec cannot be combined with --load (except with --resize new)")
        net = load_model(cfg.load)
        if net.codec is None:
            raise ScribaError("the loaded model has no codec", path=cfg.load)
        _fit_codec(net, cfg, texts)
        net.metadata["accuracy"] = []
        net.metadata["metrics"] = []
        return net
    codec = Codec.from_spec(cfg.codec, texts)
    net = build_model(cfg.spec, None, seg_type=seg_type, legacy_polygons=cfg.legacy_polygons)
    net.append_output(codec.max_label + 1)
    net.codec = codec
    return net


def _fit_codec(net: Any, cfg: TrainConfig, texts: Sequence[str]) -> None:
    """Adapts a loaded model's codec and output layer to the training data (``--resize``)."""
    from scriba.codec import Codec

    codec = net.codec
    missing: set[str] = set()
    for t in texts:
        missing |= codec.missing(t)
    if cfg.resize == "new":
        data_codec = Codec.from_spec(cfg.codec, texts)
        merged, deleted = codec.merge(data_codec)
        net.resize_output(merged.max_label + 1, deleted)
        net.codec = merged
        logger.info(
            "output layer matched to the training data: %d labels removed, %d added",
            len(deleted),
            len(set(merged.c2l) - set(codec.c2l)),
        )
        return
    if not missing:
        return
    shown = " ".join(f"{c!r} (U+{ord(c):04X})" if len(c) == 1 else repr(c) for c in sorted(missing))
    if cfg.resize == "fail":
        raise UsageError(
            f"the training data has {len(missing)} character(s) the loaded model lacks: {shown}; "
            f"use --resize union to add them or --resize new to match the data",
            path=cfg.load,
        )
    new = codec.add_labels(sorted(missing))
    net.resize_output(new.max_label + 1)
    net.codec = new
    logger.info("added %d character(s) to the model's codec: %s", len(missing), shown)


def _missing_report(codec: Any, texts: Sequence[str]) -> tuple[int, str]:
    chars: dict[str, int] = {}
    lines = 0
    for t in texts:
        miss = codec.missing(t)
        if miss:
            lines += 1
            for c in miss:
                chars[c] = chars.get(c, 0) + 1
    shown = ", ".join(f"{c!r} (U+{ord(c):04X})" if len(c) == 1 else repr(c) for c in sorted(chars))
    return lines, shown


def train(
    cfg: TrainConfig, g: GlobalConfig | None = None, *, callbacks: Sequence[Any] = (), progress: bool | None = None
) -> TrainResult:
    """Runs a complete training job; see the module docstring. Raises :class:`~scriba.errors.ScribaError`.

    The process's settings (threads, warning filters, log levels) are as before when it returns; see
    :func:`scriba.machine.tuned`. Data (``training_data``, ``evaluation_data``) may be files, globs and
    manifests, as on the command line:

    >>> from scriba import train
    >>> from scriba.config import GlobalConfig, TrainConfig
    >>> cfg = TrainConfig(training_data=["examples/froc_sample/train/*_0180_*.png"],
    ...                   evaluation_data=["examples/froc_sample/val/*_0114_*.png"], format_type="path",
    ...                   normalization="NFD", spec="[1,32,0,1 Cr3,3,16 Mp2,2 S1(1x0)1,3 Lbx32]",
    ...                   quit="fixed", epochs=1, checkpoint_path="model")
    >>> result = train(cfg, GlobalConfig(num_workers=0), progress=False)
    >>> result.stopped, result.train_lines, result.val_lines, result.weights.startswith("model/best_")
    ('fixed', 5, 4, True)
    """
    g = g or GlobalConfig()
    if cfg.resume and cfg.load:  # checked before the checkpoint's configuration replaces both
        raise UsageError("--load and --resume are mutually exclusive")
    if not cfg.resume:  # data as the CLI takes it: files, globs and manifests
        cfg = replace(
            cfg, training_data=resolve_inputs(cfg.training_data), evaluation_data=resolve_inputs(cfg.evaluation_data)
        )
    accelerator, devices = runtime.parse_device(g.device)
    procs = cluster.resolve_layout(g.processes, g.num_nodes, devices)  # contradicting options first
    runtime.require_device(g.device, accelerator, devices)
    if procs.distributed and accelerator == "mps":
        raise UsageError("several processes need CPUs (-d cpu) or CUDA GPUs; -d mps trains in one process")
    if procs.distributed and g.seed is None and not cfg.resume:
        # every process must draw the same split and batch order
        g = replace(g, seed=cluster.shared_seed(procs))
    if procs.launcher == "local":
        if callbacks:
            raise UsageError("callbacks cannot be passed to a run of several processes")
        from scriba.trainer.launch import run_processes

        return TrainResult(**run_processes("scriba.jobs.train.job:train", cfg, g, procs, progress=progress))
    ckpt: dict[str, Any] | None = None
    if cfg.resume:
        cfg, g, ckpt = runtime.restore_configs(cfg, g, key="train_config", task="training")
    with machine.tuned(g) as m:
        return _train(cfg, g, ckpt, m, procs, callbacks, progress)


def _train(
    cfg: TrainConfig,
    g: GlobalConfig,
    ckpt: dict[str, Any] | None,
    m: machine.Tuning,
    procs: Any,
    callbacks: Sequence[Any],
    progress: bool | None,
) -> TrainResult:
    from scriba.data.dataset import LineDataset
    from scriba.data.transforms import LineTransform
    from scriba.jobs.train.module import RecognitionModule
    from scriba.text import TextTransform
    from scriba.trainer.callbacks import Diverged, FreezeBackbone, LRScheduleCallback, RunState
    from scriba.trainer.datamodule import LineDataModule, collect_lines, text_transform
    from scriba.trainer.optim import LRSchedule
    from scriba.trainer.progress import ProgressReporter, announce, start_lines

    # the run: configurations (a resumed run's own), output directory, device, seeds
    rank = cluster.process_rank(procs)
    cluster.quiet_other_ranks(rank)
    cfg = _check_config(cfg)
    if ckpt is None and not cfg.load:
        from scriba.vgsl.model import check_trainable

        check_trainable(cfg.spec)
    out = runtime.prepare_output(cfg.checkpoint_path)
    accelerator = runtime.parse_device(g.device)[0]
    data_info = runtime.stored_data_info(ckpt)
    seed, sampler_seed = runtime.seed_run(g, data_info)

    # the lines and the network, with a codec that covers the training texts
    lines = collect_lines(cfg, seed, split=data_info.get("split"))
    net = _codec_and_model(cfg, lines.train_texts, lines.seg_type, ckpt)
    codec = net.codec
    n_lines, shown = _missing_report(codec, lines.train_texts)
    if not any(codec.encode(t) for t in lines.train_texts):
        raise NoDataError(
            f"the codec encodes none of the {len(lines.train_texts)} training line(s) ({len(codec)} codec "
            f"entries; missing: {shown}): there is nothing to learn"
        )
    if n_lines:
        logger.warning(
            "%d training line(s) contain characters missing from the codec, left out of their labels: %s",
            n_lines,
            shown,
        )
    n_lines, shown = _missing_report(codec, lines.val_texts)
    if n_lines:
        logger.warning(
            "%d validation line(s) contain characters missing from the codec, counted as errors: %s", n_lines, shown
        )

    # the datasets (preprocessed into memory when small enough) and the split they came from
    lt = LineTransform.from_model_input(tuple(net.input), padding=cfg.padding, seg_type=lines.seg_type)
    tt = text_transform(cfg)
    train_ds = LineDataset(
        lines.train,
        lt,
        tt,
        codec=codec,
        legacy_polygons=cfg.legacy_polygons,
        augment=cfg.augment,
        texts=lines.train_texts,
    )
    val_ds = LineDataset(lines.val, lt, tt, codec=None, legacy_polygons=cfg.legacy_polygons, texts=lines.val_texts)
    train_ds, val_ds = runtime.preload_if_small(train_ds, val_ds, g.num_workers, m.cache_bytes)
    if ckpt is None:
        runtime.describe_lines(net, lines.seg_type, cfg.legacy_polygons, train_ds)
    runtime.record_data(data_info, sampler_seed, lines, train_ds, val_ds)
    split_file = runtime.write_split(out, lines.split) if rank == 0 else None

    # the Lightning module and data module; large lines on CPU run as micro-batches
    info = {"train_config": asdict(cfg), "global_config": asdict(g), "data": data_info}
    pred_tt = TextTransform(
        normalization=cfg.normalization, normalize_whitespace=cfg.normalize_whitespace, bidi_reordering=False
    )
    module = RecognitionModule(net, cfg, info=info, pred_transform=pred_tt, aux_ctc=cfg.aux_ctc)
    on_gpu = machine.uses_gpu(accelerator)
    widths = train_ds.estimated_widths()
    micro = cfg.batch_size if on_gpu else machine.micro_batch(g, cfg.batch_size, net.input[2], widths)
    # DDP averages the gradients of the processes; the loss is a sum over lines, so scaling it by the number
    # of processes gives the gradient of one process running the global batch (clipping, rates unchanged)
    module.loss_scale = float(procs.world)
    if micro < cfg.batch_size:
        module.loss_scale *= float(cfg.batch_size // micro)
        logger.info(
            "batches of %d lines run as %d micro-batches of %d (faster on CPU)",
            cfg.batch_size,
            cfg.batch_size // micro,
            micro,
        )
    dm = LineDataModule(
        train_ds,
        val_ds,
        cfg.batch_size,
        val_batch_size=micro,
        micro_batch=micro,
        num_workers=g.num_workers,
        seed=sampler_seed,
        pin_memory=on_gpu,
        in_process_when_cached=not on_gpu,
    )

    # callbacks: checkpoints, learning-rate schedule, resume bookkeeping, progress, stopping, freezing
    from lightning.pytorch.callbacks import EarlyStopping

    ckpt_cb = runtime.checkpoint_callback(out, "val_accuracy", "max")
    run_state = RunState(out, sampler=dm.train_sampler)
    reporter = ProgressReporter(rich=runtime.rich_progress(progress, g))
    cbs: list[Any] = [
        ckpt_cb,
        LRScheduleCallback(
            lambda spe: LRSchedule.from_config(cfg, spe), monitor="val_accuracy", stop_when_annealed=cfg.quit == "aneal"
        ),
        run_state,
    ]
    early = None
    if cfg.quit == "early":
        early = EarlyStopping(
            monitor="val_accuracy", mode="max", patience=cfg.lag, min_delta=cfg.min_delta, check_finite=False
        )
        cbs.append(early)
    if cfg.freeze_backbone > 0:
        cbs.append(FreezeBackbone(cfg.freeze_backbone))
    if cfg.ema > 0:
        from scriba.trainer.averaging import EMA

        cbs.append(EMA(cfg.ema))
    cbs.append(reporter)  # after early stopping: its epoch line shows the counter of the validation just done
    cbs.extend(callbacks)

    # fit, then convert the best checkpoint
    cluster.announce(procs, cfg.batch_size, rank)
    trainer = runtime.build_trainer(
        cfg,
        g,
        out,
        cbs,
        logger_name="ketos_train",
        min_epochs=cfg.min_epochs,
        accumulate_grad_batches=cfg.accumulate_grad_batches * (cfg.batch_size // micro),
        processes=procs,
        find_unused=cfg.freeze_backbone > 0,
    )
    module.info["machine"] = m.report(ckpt, precision=str(trainer.precision), micro_batch=micro)
    result = TrainResult(output_dir=str(out), split_file=split_file, train_lines=len(train_ds), val_lines=len(val_ds))
    for line in start_lines(
        trainer,
        train_lines=len(train_ds),
        val_lines=len(val_ds),
        skipped=len(lines.skipped),
        alphabet=len(codec.c2l),
        output=str(out),
        batch_size=cfg.batch_size,
        accumulate=cfg.accumulate_grad_batches,
        precision_asked=g.precision,
        resumed=cfg.resume,
    ):
        if rank == 0:
            announce(line)
    try:
        interrupted = runtime.fit(trainer, module, dm, cfg.resume)
    except Diverged as exc:
        # the best weights of the finite part of the run are still worth having
        runtime.record_run(result, trainer, module, run_state, reporter)
        if rank == 0:
            _finish(result, ckpt_cb, cfg, out)
        kept = f"; the best weights so far are in {result.weights}" if result.weights else ""
        raise Diverged(f"{exc}{kept}") from None
    runtime.record_run(result, trainer, module, run_state, reporter)
    if interrupted:
        result.stopped = "interrupted"
        if rank == 0:
            _finish(result, ckpt_cb, cfg, out)
        logger.warning("training interrupted; %s", outcome.resume_hint("train", result.abort_checkpoint, out))
        return result
    result.stopped = runtime.stop_reason(cfg, trainer, early)
    if rank == 0:
        announce(outcome.stop_message(result.stopped, cfg, trainer, early))
        _finish(result, ckpt_cb, cfg, out)
    return result


def _finish(result: TrainResult, ckpt_cb: Any, cfg: TrainConfig, out: Path) -> None:
    """Converts the best checkpoint to weights and draws the curves."""
    from scriba.jobs.train.plot import plot_history
    result.best_accuracy = runtime.export_best(ckpt_cb, cfg, out, result, "accuracy")
    try:
        result.plot = plot_history(result.history, out / PLOT_FILE)
    except Exception as exc:  # noqa: BLE001 - a missing plot must not cost the trained model
        logger.warning("could not draw the training curves: %s", exc)
