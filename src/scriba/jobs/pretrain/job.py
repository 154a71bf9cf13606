"""``ketos pretrain`` as a library call: :func:`pretrain` takes the configurations, returns a :class:`PretrainResult`.

The network (``spec``, or ``load``) is cut at its first recurrent layer; the convolutional front and the
recurrent encoder learn to tell the true (masked) frame from negatives of the same line. Checkpoints go to
``checkpoint_path`` as in training (``checkpoint_{epoch}-{val_loss}.ckpt``, ``checkpoint_last.ckpt``,
``checkpoint_abort.ckpt``); the best one is converted to ``best_<loss>.safetensors``, a complete
recognition model with a dummy 2-way output layer and codec ``{' ': [1]}`` that
``ketos train --load best_<loss>.safetensors --resize new`` fine-tunes on transcribed data.

``resume`` continues a run from its checkpoint with its own data split and options; only the machine
settings of ``GlobalConfig`` (device, workers, threads, verbosity, cache budget, micro-batches,
weight-gradient layout) come from the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from scriba import machine
from scriba.config import GlobalConfig, PretrainConfig
from scriba.data.sources import resolve_inputs
from scriba.errors import UsageError
from scriba.trainer import cluster, outcome, runtime

logger = logging.getLogger(__name__)

TASK = "pretrain"


@dataclass
class PretrainResult(outcome.RunResult):
    """A pretraining run's :class:`~scriba.trainer.outcome.RunResult`, with its best validation loss."""

    best_loss: float | None = None
    warmup_steps: float = 0.0
    train_lines: int = 0
    val_lines: int = 0


def check_config(cfg: PretrainConfig) -> PretrainConfig:
    """Rejects option values that cannot work, with the option's name in the message."""
    runtime.check_run_options(cfg)
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
    return cfg


def warmup_steps(cfg: PretrainConfig) -> float:
    """``--warmup`` counts samples here; the schedules count optimizer steps."""
    return float(cfg.warmup) / (max(1, cfg.batch_size) * max(1, cfg.accumulate_grad_batches))


def _network(cfg: PretrainConfig, seg_type: str, ckpt: dict[str, Any] | None) -> Any:
    from scriba.jobs.pretrain.network import build_pretrain_model, prepare_loaded

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
    """Runs a complete pretraining job; see the module docstring. Raises :class:`~scriba.errors.ScribaError`.

    The process's settings (threads, warning filters, log levels) are as before when it returns; see
    :func:`scriba.machine.tuned`.

    >>> from scriba import pretrain
    >>> from scriba.config import GlobalConfig, PretrainConfig
    >>> cfg = PretrainConfig(training_data=["examples/froc_sample/train/*_0180_*.png"],
    ...                      evaluation_data=["examples/froc_sample/val/*_0114_*.png"], format_type="path",
    ...                      spec="[1,32,0,1 Cr3,3,16 Mp2,2 S1(1x0)1,3 Lbx32]", quit="fixed", epochs=1,
    ...                      warmup=0, mask_width=2, num_negatives=4, checkpoint_path="pretrained")
    >>> result = pretrain(cfg, GlobalConfig(num_workers=0), progress=False)
    >>> result.epochs, result.weights.startswith("pretrained/")
    (1, True)
    """
    g = g or GlobalConfig()
    if cfg.resume and cfg.load:  # checked before the checkpoint's configuration replaces both
        raise UsageError("--load and --resume are mutually exclusive")
    accelerator, devices = runtime.parse_device(g.device)
    cluster.one_process_only(g.processes, g.num_nodes, devices, "ketos pretrain")
    runtime.require_device(g.device, accelerator, devices)
    ckpt: dict[str, Any] | None = None
    if cfg.resume:
        cfg, g, ckpt = runtime.restore_configs(cfg, g, key="pretrain_config", task="pretraining")
    else:  # data as the CLI takes it: files, globs and manifests
        cfg = replace(
            cfg, training_data=resolve_inputs(cfg.training_data), evaluation_data=resolve_inputs(cfg.evaluation_data)
        )
    with machine.tuned(g) as m:
        return _pretrain(cfg, g, ckpt, m, callbacks, progress)


def _pretrain(
    cfg: PretrainConfig,
    g: GlobalConfig,
    ckpt: dict[str, Any] | None,
    m: machine.Tuning,
    callbacks: Sequence[Any],
    progress: bool | None,
) -> PretrainResult:
    from scriba.data.dataset import LineDataset
    from scriba.data.transforms import LineTransform
    from scriba.jobs.pretrain.module import PretrainModule, RelativeEarlyStopping
    from scriba.trainer.callbacks import LRScheduleCallback, RunState
    from scriba.trainer.datamodule import LineDataModule, collect_lines
    from scriba.trainer.optim import LRSchedule
    from scriba.trainer.progress import ProgressReporter

    # the run: configurations (a resumed run's own), output directory, device, seeds
    cfg = check_config(cfg)
    out = runtime.prepare_output(cfg.checkpoint_path)
    accelerator = runtime.parse_device(g.device)[0]
    data_info = runtime.stored_data_info(ckpt)
    seed, sampler_seed = runtime.seed_run(g, data_info)

    # the lines (transcribed or not) and the network
    lines = collect_lines(cfg, seed, split=data_info.get("split"), require_text=False)
    net = _network(cfg, lines.seg_type, ckpt)

    # the datasets (preprocessed into memory when small enough) and the split they came from
    lt = LineTransform.from_model_input(tuple(net.input), padding=cfg.padding, seg_type=lines.seg_type)
    train_ds = LineDataset(
        lines.train, lt, None, legacy_polygons=cfg.legacy_polygons, augment=cfg.augment, texts=lines.train_texts
    )
    val_ds = LineDataset(lines.val, lt, None, legacy_polygons=cfg.legacy_polygons, texts=lines.val_texts)
    train_ds, val_ds = runtime.preload_if_small(train_ds, val_ds, g.num_workers, m.cache_bytes)
    if ckpt is None:
        runtime.describe_lines(net, lines.seg_type, cfg.legacy_polygons, train_ds)
    runtime.record_data(data_info, sampler_seed, lines, train_ds, val_ds)
    split_file = runtime.write_split(out, lines.split)

    # the Lightning module and data module
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
        pin_memory=machine.uses_gpu(accelerator),
    )

    # callbacks: checkpoints, learning-rate schedule (warmup in steps), resume bookkeeping, progress, stopping
    ckpt_cb = runtime.checkpoint_callback(out, "val_loss", "min")
    warmup = warmup_steps(cfg)
    sched_cfg = replace(cfg, warmup=warmup)
    run_state = RunState(out, sampler=dm.train_sampler)
    reporter = ProgressReporter(rich=runtime.rich_progress(progress, g), metrics=("val_loss",))
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

    # fit, then convert the best checkpoint
    trainer = runtime.build_trainer(
        cfg,
        g,
        out,
        cbs,
        logger_name="ketos_pretrain",
        task="pretrain",
        # a fixed run is as long as asked; the minimum only holds back early stopping
        min_epochs=cfg.min_epochs if cfg.quit != "fixed" else None,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
    )
    module.info["machine"] = m.report(ckpt, precision=str(trainer.precision))
    result = PretrainResult(
        output_dir=str(out),
        split_file=split_file,
        train_lines=len(train_ds),
        val_lines=len(val_ds),
        warmup_steps=warmup,
    )
    interrupted = runtime.fit(trainer, module, dm, cfg.resume)
    runtime.record_run(result, trainer, module, run_state, reporter)
    if interrupted:
        result.stopped = "interrupted"
        _finish(result, ckpt_cb, cfg, out)
        logger.warning("pretraining interrupted; %s", outcome.resume_hint("pretrain", result.abort_checkpoint, out))
        return result
    result.stopped = runtime.stop_reason(cfg, trainer, early)
    _finish(result, ckpt_cb, cfg, out)
    return result


def _finish(result: PretrainResult, ckpt_cb: Any, cfg: PretrainConfig, out: Path) -> None:
    """Converts the best checkpoint to a weights file holding only the recognition network."""
    result.best_loss = runtime.export_best(ckpt_cb, cfg, out, result, "loss")
