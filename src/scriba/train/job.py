"""``ketos train`` as a library call: :func:`train` takes the configurations and returns a :class:`TrainResult`.

From scratch (``spec``), fine-tuning (``load`` + ``resize``) or continuing (``resume``: everything, data
and hyperparameters included, comes from the checkpoint; only the machine settings of ``GlobalConfig``
(device, workers, threads, verbosity) are taken from the caller).
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scriba.config import QUIT_MODES, RESIZE_ALIASES, RESIZE_MODES, WEIGHTS_FORMATS, GlobalConfig, TrainConfig, build
from scriba.errors import ScribaError, UsageError

logger = logging.getLogger(__name__)

PARTITION_FILE = "partition.json"
PLOT_FILE = "training_curves.png"
# preprocessed (compressed) lines are kept in memory when both sets fit in this many bytes (SCRIBA_CACHE_MB
# overrides; 0 turns the cache off)
CACHE_LIMIT = 2 * 1024**3
MICRO_PIXELS = 200_000


@dataclass
class TrainResult:
    """What a training run produced and why it stopped (``fixed``, ``early``, ``aneal``, ``interrupted``)."""

    output_dir: str
    weights: str | None = None
    best_accuracy: float | None = None
    best_checkpoint: str | None = None
    abort_checkpoint: str | None = None
    stopped: str = "fixed"
    epochs: int = 0
    steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    plot: str | None = None
    split_file: str | None = None
    lines_per_second: list[float] = field(default_factory=list)
    train_lines: int = 0
    val_lines: int = 0


def _check_config(cfg: TrainConfig) -> TrainConfig:
    if cfg.quit not in QUIT_MODES:
        raise UsageError(f"invalid --quit {cfg.quit!r} (expected one of {', '.join(QUIT_MODES)})")
    if cfg.quit == "fixed" and cfg.epochs <= 0:
        raise UsageError("--quit fixed needs a positive number of --epochs")
    if cfg.freq <= 0 or (cfg.freq > 1 and cfg.freq != int(cfg.freq)):
        raise UsageError(f"--freq must be a fraction of an epoch or a whole number of epochs, got {cfg.freq}")
    if cfg.weights_format not in WEIGHTS_FORMATS:
        raise UsageError(f"invalid --weights-format {cfg.weights_format!r}")
    if cfg.resize not in RESIZE_MODES:
        raise UsageError(f"invalid --resize {cfg.resize!r} (expected one of {', '.join(RESIZE_MODES)})")
    if cfg.batch_size < 1 or cfg.accumulate_grad_batches < 1:
        raise UsageError("--batch-size and --accumulate-grad-batches must be positive")
    if cfg.load and cfg.resume:
        raise UsageError("--load and --resume are mutually exclusive")
    if cfg.quit == "aneal":
        from scriba.train.optim import check_aneal

        check_aneal(cfg.schedule)
    if cfg.resize in RESIZE_ALIASES:
        logger.warning("--resize %s is deprecated; use %s", cfg.resize, RESIZE_ALIASES[cfg.resize])
        cfg.resize = RESIZE_ALIASES[cfg.resize]
    return cfg


def _prepare_output(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".scriba-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ScribaError(f"output directory cannot be written ({exc.strerror or exc})", path=str(out)) from None
    return out


def _devices(spec: str) -> tuple[str, Any]:
    spec = (spec or "auto").strip()
    if spec == "auto":
        return "auto", 1
    if spec in ("cpu", "mps"):
        return spec, 1
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if all(p.startswith("cuda:") and p[5:].isdigit() for p in parts):
        if len(parts) > 1:
            raise UsageError(f"training on several devices is not supported ({spec}); pick one, e.g. {parts[0]}")
        return "gpu", [int(parts[0][5:])]
    if spec == "cuda":
        return "gpu", 1
    raise UsageError(f"invalid device {spec!r}: use auto, cpu, mps or cuda:N")


def _resume_configs(cfg: TrainConfig, g: GlobalConfig) -> tuple[TrainConfig, GlobalConfig, dict[str, Any]]:
    from scriba.weights.checkpoint import read_checkpoint_dict

    ckpt = read_checkpoint_dict(cfg.resume)  # type: ignore[arg-type]
    entry = ckpt.get("scriba") or {}
    if "train_config" not in entry:
        raise ScribaError("not a scriba training checkpoint (no training configuration inside)", path=cfg.resume)
    stored = dict(entry["train_config"])
    stored.update(resume=cfg.resume, load=None)
    new_cfg = build(TrainConfig, stored)
    gd = dict(entry.get("global_config") or {})
    # machine settings follow the machine the run continues on; everything else is the run's own
    gd.update(device=g.device, num_workers=g.num_workers, num_threads=g.num_threads, verbose=g.verbose)
    return new_cfg, build(GlobalConfig, gd), ckpt


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


def _cache_limit() -> int:
    env = os.environ.get("SCRIBA_CACHE_MB")
    return int(float(env) * 1024**2) if env else CACHE_LIMIT


def _preload(ds: Any, name: str, workers: int) -> Any:
    failed: list[int] = []

    def report(i: int, err: str) -> None:
        rec = ds.records[i]
        logger.warning("%s line left out: %s (%s): %s", name, rec.source, rec.id, err)

    failed = ds.preload(workers, on_error=report)
    if failed:
        bad = set(failed)
        ds = ds.subset([i for i in range(len(ds)) if i not in bad])
    return ds


def _micro_batch(batch_size: int, height: int, widths: Sequence[int]) -> int:
    """Lines per forward pass on CPU: a batch of large lines runs faster as several smaller passes whose
    activations stay in cache (default spec, -B 16: about 1.4x), with gradients accumulated to the same sum.

    The largest divisor of the batch size whose lines hold about ``MICRO_PIXELS`` input pixels; small lines
    and small networks keep their whole batches. ``SCRIBA_MICROBATCH=0`` turns this off.
    """
    if batch_size <= 1 or not widths or os.environ.get("SCRIBA_MICROBATCH") == "0":
        return batch_size
    per_line = max(1, height) * (sum(widths) / len(widths))
    fits = max(1, int(MICRO_PIXELS // per_line))
    return max(d for d in range(1, batch_size + 1) if batch_size % d == 0 and d <= fits)


def _write_split(out: Path, split: dict[str, Any]) -> str | None:
    if split.get("mode") != "partition":
        return None
    from scriba.weights.atomic import atomic_path

    path = out / PARTITION_FILE
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fp:
            json.dump(split, fp, ensure_ascii=False, indent=1)
    # path-format lines are whole files: also write manifests usable with -t/-e
    for name, key in (("partition_train.lst", "train"), ("partition_val.lst", "validation")):
        keys = split.get(key) or []
        if keys and all("#" not in k for k in keys):
            with atomic_path(out / name) as tmp:
                Path(tmp).write_text("".join(f"{os.path.abspath(k)}\n" for k in keys), encoding="utf-8")
    return str(path)


def train(
    cfg: TrainConfig, g: GlobalConfig | None = None, *, callbacks: Sequence[Any] = (), progress: bool | None = None
) -> TrainResult:
    """Runs a complete training job; see the module docstring. Raises :class:`~scriba.errors.ScribaError`."""
    import lightning as L
    import torch

    from scriba.data.dataset import LineDataset
    from scriba.data.transforms import LineTransform
    from scriba.text import TextTransform
    from scriba.train.callbacks import FreezeBackbone, Interrupted, LRScheduleCallback, RunState
    from scriba.train.datamodule import LineDataModule, collect_lines, text_transform
    from scriba.train.module import RecognitionModule
    from scriba.train.optim import LRSchedule
    from scriba.train.progress import ProgressReporter

    g = g or GlobalConfig()
    ckpt: dict[str, Any] | None = None
    if cfg.resume:
        cfg, g, ckpt = _resume_configs(cfg, g)
    cfg = _check_config(cfg)
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

    lines = collect_lines(cfg, seed, split=data_info.get("split"))
    net = _codec_and_model(cfg, lines.train_texts, lines.seg_type, ckpt)
    codec = net.codec
    n_lines, shown = _missing_report(codec, lines.train_texts)
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
    info = {"train_config": asdict(cfg), "global_config": asdict(g), "data": data_info}
    pred_tt = TextTransform(
        normalization=cfg.normalization, normalize_whitespace=cfg.normalize_whitespace, bidi_reordering=False
    )
    module = RecognitionModule(net, cfg, info=info, pred_transform=pred_tt)
    on_gpu = accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())
    micro = cfg.batch_size if on_gpu else _micro_batch(cfg.batch_size, net.input[2], train_ds.estimated_widths())
    if micro < cfg.batch_size:
        module.loss_scale = float(cfg.batch_size // micro)
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

    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    ckpt_cb = ModelCheckpoint(
        dirpath=str(out),
        filename="checkpoint_{epoch:02d}-{val_accuracy:.4f}",
        monitor="val_accuracy",
        mode="max",
        save_top_k=10,
        save_last=True,
        auto_insert_metric_name=False,
    )
    ckpt_cb.CHECKPOINT_NAME_LAST = "checkpoint_last"
    run_state = RunState(out, sampler=dm.train_sampler)
    reporter = ProgressReporter(rich=progress if progress is not None else (sys.stderr.isatty() and g.verbose == 0))
    cbs: list[Any] = [
        ckpt_cb,
        LRScheduleCallback(
            lambda spe: LRSchedule.from_config(cfg, spe), monitor="val_accuracy", stop_when_annealed=cfg.quit == "aneal"
        ),
        run_state,
        reporter,
    ]
    early = None
    if cfg.quit == "early":
        early = EarlyStopping(
            monitor="val_accuracy", mode="max", patience=cfg.lag, min_delta=cfg.min_delta, check_finite=False
        )
        cbs.append(early)
    if cfg.freeze_backbone > 0:
        cbs.append(FreezeBackbone(cfg.freeze_backbone))
    cbs.extend(callbacks)

    pl_logger: Any = False
    if cfg.pl_logger == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        pl_logger = TensorBoardLogger(save_dir=cfg.log_dir or os.getcwd(), name="ketos_train")
    elif cfg.pl_logger:
        raise UsageError(f"unknown --logger {cfg.pl_logger!r} (expected tensorboard)")

    val_kw: dict[str, Any] = (
        {"check_val_every_n_epoch": int(cfg.freq), "val_check_interval": 1.0}
        if cfg.freq > 1
        else {"check_val_every_n_epoch": 1, "val_check_interval": float(cfg.freq)}
    )
    max_epochs = cfg.epochs if cfg.quit == "fixed" or (cfg.quit == "aneal" and cfg.epochs > 0) else -1
    _quiet_lightning()
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        precision=g.precision,  # type: ignore[arg-type]
        max_epochs=max_epochs,
        min_epochs=cfg.min_epochs,
        gradient_clip_val=cfg.gradient_clip_val or None,
        accumulate_grad_batches=cfg.accumulate_grad_batches * (cfg.batch_size // micro),
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
    result = TrainResult(output_dir=str(out), split_file=split_file, train_lines=len(train_ds), val_lines=len(val_ds))
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.resume, weights_only=True)
    except (SIGTERMException, KeyboardInterrupt):
        result.stopped = "interrupted"
    except Interrupted:
        result.stopped = "interrupted"
    result.abort_checkpoint = run_state.abort_path
    result.history = list(module.history)
    result.epochs = trainer.current_epoch
    result.steps = trainer.global_step
    result.lines_per_second = list(reporter.lines_per_second)
    if result.stopped == "interrupted":
        logger.warning("training interrupted; continue with: ketos train --resume %s", result.abort_checkpoint)
        return result
    if early is not None and early.stopped_epoch > 0:
        result.stopped = "early"
    elif cfg.quit == "aneal" and trainer.should_stop:
        result.stopped = "aneal"
    else:
        result.stopped = cfg.quit if cfg.quit == "fixed" else "finished"
    _finish(result, ckpt_cb, cfg, out)
    return result


def _finish(result: TrainResult, ckpt_cb: Any, cfg: TrainConfig, out: Path) -> None:
    """Converts the best checkpoint to weights and draws the curves."""
    from scriba.train.plot import plot_history
    from scriba.weights import save_weights
    from scriba.weights.checkpoint import model_from_checkpoint, read_checkpoint_dict

    best = ckpt_cb.best_model_path
    if not best or ckpt_cb.best_model_score is None:
        logger.warning("no validation run finished: no best model to convert")
    else:
        score = float(ckpt_cb.best_model_score)
        model = model_from_checkpoint(read_checkpoint_dict(best), best)
        path = save_weights(model, out / f"best_{score:.4f}.safetensors", cfg.weights_format)
        logger.info("converted best model %s (score %.4f) to %s", best, score, path)
        result.weights = str(path)
        result.best_accuracy = score
        result.best_checkpoint = best
    try:
        result.plot = plot_history(result.history, out / PLOT_FILE)
    except Exception as exc:  # noqa: BLE001 - a missing plot must not cost the trained model
        logger.warning("could not draw the training curves: %s", exc)


def _quiet_lightning() -> None:
    # Lightning's info lines (GPU available, TPU...) and its warnings about our deliberate choices are noise here
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric.utilities.seed",
        "lightning.pytorch.trainer.connectors.signal_connector",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")
    warnings.filterwarnings("ignore", message=".*train_dataloader yielded None.*")
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")
