"""The scaffolding every Lightning job here stands on (``ketos train``, ``ketos pretrain``).

In the order a job uses them: check the options, restore the configurations of a resumed run, prepare the output directory,
parse the device, seed the run, keep small datasets in memory, write the split, build
the Lightning trainer, fit, and tell how the run stopped. What differs between the jobs (data, network,
module, callbacks, the conversion of the best checkpoint) stays in each job; what depends on the hardware
(threads, allocator, precision, micro-batches, cache budget) is in :mod:`scriba.machine`.

torch and Lightning are imported inside the functions, so that importing a job stays fast.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
from pathlib import Path
from typing import Any, TypeVar

from scriba import machine
from scriba.config import ADDED_OPTIONS, QUIT_MODES, WEIGHTS_FORMATS, GlobalConfig, build
from scriba.errors import ScribaError, UsageError

logger = logging.getLogger(__name__)

PARTITION_FILE = "partition.json"

C = TypeVar("C")


# -- start of a run --------------------------------------------------------------------------------------------


def check_run_options(cfg: Any) -> None:
    """Rejects values of the options every job has (``--quit``, ``--epochs``, ``--freq``, ``--weights-format``,
    batch sizes, ``--load``/``--resume``, the schedule and ``aneal``), with the option's name in the message."""
    if cfg.quit not in QUIT_MODES:
        raise UsageError(f"invalid --quit {cfg.quit!r} (expected one of {', '.join(QUIT_MODES)})")
    if cfg.quit == "fixed" and cfg.epochs <= 0:
        raise UsageError("--quit fixed needs a positive number of --epochs")
    if cfg.freq <= 0 or (cfg.freq > 1 and cfg.freq != int(cfg.freq)):
        raise UsageError(f"--freq must be a fraction of an epoch or a whole number of epochs, got {cfg.freq}")
    if cfg.max_time < 0:
        raise UsageError(f"--max-time must be a number of minutes, 0 or more, got {cfg.max_time}")
    if cfg.weights_format not in WEIGHTS_FORMATS:
        raise UsageError(f"invalid --weights-format {cfg.weights_format!r}")
    if cfg.batch_size < 1 or cfg.accumulate_grad_batches < 1:
        raise UsageError("--batch-size and --accumulate-grad-batches must be positive")
    if cfg.load and cfg.resume:
        raise UsageError("--load and --resume are mutually exclusive")
    from scriba.trainer.optim import LRSchedule, check_aneal

    schedule = LRSchedule.from_config(cfg, steps_per_epoch=1)  # its own checks (1cycle's --epochs, --cos-max), before the data
    if cfg.quit == "aneal":
        check_aneal(cfg.schedule)
    if cfg.quit == "early" and cfg.epochs > 0 and not (cfg.schedule == "1cycle" or schedule.over_run()):
        # kraken ignores -N here too; a user who asked for N epochs should not find out after hours
        logger.warning(
            f"--epochs {cfg.epochs} does not end the run under --quit early, which stops when validation stops "
            "improving; add -q fixed to train exactly that many epochs"
        )


def restore_configs(cfg: C, g: GlobalConfig, *, key: str, task: str) -> tuple[C, GlobalConfig, dict[str, Any]]:
    """The configurations stored in the checkpoint ``cfg.resume`` under ``key`` (e.g. ``train_config``).

    Everything comes from the checkpoint except the machine settings of ``g`` (device, workers, threads,
    verbosity, cache budget, micro-batches, weight-gradient layout, processes, nodes): they follow the machine
    the run continues on. Returns the configurations and the
    checkpoint; ``task`` (``training``) names the kind of checkpoint in the error for a foreign file.
    """
    from scriba.weights.checkpoint import read_checkpoint_dict

    resume = cfg.resume  # type: ignore[attr-defined]
    ckpt = read_checkpoint_dict(resume)
    entry = ckpt.get("scriba") or {}
    if key not in entry:
        raise ScribaError(f"not a scriba {task} checkpoint (no {task} configuration inside)", path=resume)
    stored = {**ADDED_OPTIONS, **entry[key]}
    stored.update(resume=resume, load=None)
    gd = dict(entry.get("global_config") or {})
    gd.update(device=g.device, num_workers=g.num_workers, num_threads=g.num_threads, verbose=g.verbose,
              cache_mb=g.cache_mb, micro_batch=g.micro_batch, weight_gradient_layout=g.weight_gradient_layout,
              processes=g.processes, num_nodes=g.num_nodes)
    return build(type(cfg), stored), build(GlobalConfig, gd), ckpt


def prepare_output(path: str) -> Path:
    """Creates the output directory and checks that it can be written (a :class:`ScribaError` if not); the
    temporaries a killed run left there are removed (and named)."""
    from scriba.weights.atomic import remove_stale

    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".scriba-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ScribaError(f"output directory cannot be written ({exc.strerror or exc})", path=str(out)) from None
    remove_stale(out)
    return out


def parse_device(spec: str) -> tuple[str, Any]:
    """``--device`` (``auto``, ``cpu``, ``mps``, ``cuda``, ``cuda:N``, a list ``cuda:0,cuda:1`` for DDP) as
    Lightning's accelerator and devices."""
    spec = (spec or "auto").strip()
    if spec == "auto":
        return "auto", 1
    if spec in ("cpu", "mps"):
        return spec, 1
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if parts and all(p.startswith("cuda:") and p[5:].isdigit() for p in parts):
        ids = [int(p[5:]) for p in parts]
        if len(set(ids)) != len(ids):
            raise UsageError(f"device {spec!r} names a GPU twice")
        return "gpu", ids
    if spec == "cuda":
        return "gpu", 1
    raise UsageError(f"invalid device {spec!r}: use auto, cpu, mps, cuda:N or a list cuda:N,cuda:M")


def require_device(spec: str, accelerator: str, devices: Any) -> None:
    """Refuses a device this machine lacks (``-d cuda:0`` without CUDA, ``cuda:3`` on two GPUs, ``mps``
    without MPS) before any data is read."""
    import torch

    if accelerator == "gpu":
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        wanted = devices if isinstance(devices, list) else [0]
        if not found or max(wanted) >= found:
            have = f"{found} CUDA device(s) (cuda:0 to cuda:{found - 1})" if found else "no CUDA device"
            raise UsageError(f"device {spec!r} requested but this machine has {have}; use -d cpu or -d auto")
    elif accelerator == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError(f"device {spec!r} requested but MPS is not available here; use -d cpu or -d auto")


def seed_run(g: GlobalConfig, data_info: dict[str, Any]) -> tuple[int | None, int]:
    """Seeds every RNG (loader workers included) and returns the seed and the train sampler's seed.

    The seed is ``g.seed`` (42 for a deterministic run without one; None leaves the RNGs alone). A resumed
    run keeps the sampler seed stored in its ``data_info``; a new unseeded run draws one.
    """
    import lightning as L

    seed = g.seed
    if seed is None and g.deterministic:
        seed = 42
    if seed is not None:
        L.seed_everything(seed, workers=True, verbose=False)
    sampler_seed = int(data_info.get("sampler_seed", seed if seed is not None else random.randrange(2**31)))
    return seed, sampler_seed


def stored_data_info(ckpt: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of the ``data`` entry of a resumed run's checkpoint (split, sampler seed); empty for a new run."""
    return dict((ckpt or {}).get("scriba", {}).get("data") or {})


# -- data ------------------------------------------------------------------------------------------------------


def preload(ds: Any, name: str, workers: int) -> Any:
    """Preprocesses every line of ``ds`` into memory; lines that fail are reported and left out."""

    from scriba.data.records import SkippedItem

    def report(i: int, err: str) -> None:
        rec = ds.records[i]
        logger.warning("%s line left out: %s", name, SkippedItem(rec.source, rec.id, err))

    failed = ds.preload(workers, on_error=report)
    if failed:
        bad = set(failed)
        ds = ds.subset([i for i in range(len(ds)) if i not in bad])
    return ds


def preload_if_small(train_ds: Any, val_ds: Any, workers: int, limit: int) -> tuple[Any, Any]:
    """Both sets preloaded (see :func:`preload`) when they fit in ``limit`` bytes, else unchanged."""
    if train_ds.estimated_bytes() + val_ds.estimated_bytes() <= limit:
        train_ds = preload(train_ds, "training", workers)
        val_ds = preload(val_ds, "validation", workers)
        if len(train_ds) == 0:
            raise ScribaError("none of the training lines could be loaded")
        if len(val_ds) == 0:
            raise ScribaError("none of the validation lines could be loaded")
    return train_ds, val_ds


def describe_lines(net: Any, seg_type: str, legacy_polygons: bool, train_ds: Any) -> None:
    """Writes what the network's input lines look like into its metadata (a new run's network only)."""
    net.metadata["seg_type"] = seg_type
    net.metadata["legacy_polygons"] = legacy_polygons
    mode = train_ds.image_mode()
    net.metadata["one_channel_mode"] = mode if mode in ("1", "L") else None


def record_data(data_info: dict[str, Any], sampler_seed: int, lines: Any, train_ds: Any, val_ds: Any) -> None:
    """Adds the sampler seed, the split and the line counts to ``data_info`` (stored in the checkpoints)."""
    data_info.update(
        sampler_seed=sampler_seed,
        split=lines.split,
        train_lines=len(train_ds),
        validation_lines=len(val_ds),
        skipped=len(lines.skipped),
    )


def write_split(out: Path, split: dict[str, Any]) -> str | None:
    """Writes an automatic (``--partition``) split to ``out/partition.json``; returns its path, or None.

    When the lines are whole files (``path`` format) the two sets also go to ``partition_train.lst`` and
    ``partition_val.lst``, manifests usable with ``-t``/``-e``.
    """
    if split.get("mode") != "partition":
        return None
    from scriba.weights.atomic import atomic_path

    path = out / PARTITION_FILE
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fp:
            json.dump(split, fp, ensure_ascii=False, indent=1)
    for name, key in (("partition_train.lst", "train"), ("partition_val.lst", "validation")):
        keys = split.get(key) or []
        if keys and all("#" not in k for k in keys):
            with atomic_path(out / name) as tmp:
                Path(tmp).write_text("".join(f"{os.path.abspath(k)}\n" for k in keys), encoding="utf-8")
    return str(path)


def plain(value: Any) -> Any:
    """Only the types ``torch.load(weights_only=True)`` accepts: dicts, lists, str, numbers, bools, None.

    For the ``scriba`` entry of the checkpoints; tensors become numbers or lists, NaN becomes None and
    anything else its string.
    """
    import torch

    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        return str(value)  # not a subclass (torch.__version__ is one), which weights_only loading refuses
    if value is None or isinstance(value, (int, float, bool)):
        return value
    return str(value)


# -- the trainer -----------------------------------------------------------------------------------------------


def checkpoint_callback(out: Path, monitor: str, mode: str) -> Any:
    """Keeps the 10 best checkpoints by ``monitor`` (``checkpoint_{epoch}-{value}.ckpt``) and ``checkpoint_last``."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    cb = ModelCheckpoint(
        dirpath=str(out),
        filename=f"checkpoint_{{epoch:02d}}-{{{monitor}:.4f}}",
        monitor=monitor,
        mode=mode,
        save_top_k=10,
        save_last=True,
        auto_insert_metric_name=False,
    )
    cb.CHECKPOINT_NAME_LAST = "checkpoint_last"
    return cb


def rich_progress(progress: bool | None, g: GlobalConfig) -> bool:
    """Whether to draw a progress bar: as asked, else on a terminal without ``-v``."""
    return progress if progress is not None else (sys.stderr.isatty() and g.verbose == 0)


def build_trainer(
    cfg: Any,
    g: GlobalConfig,
    out: Path,
    callbacks: list[Any],
    *,
    logger_name: str,
    min_epochs: int | None,
    accumulate_grad_batches: int,
    task: str = "train",
    processes: Any = None,
    find_unused: bool = False,
) -> Any:
    """The Lightning trainer for ``cfg``'s run length (``--quit``, ``--epochs``, ``--max-time``), validation
    frequency (``--freq``), clipping and ``--logger``, on ``g``'s device, writing into ``out``; Lightning's own
    output is quieted. ``processes`` (a
    :class:`~scriba.trainer.cluster.Layout`) makes it a DDP trainer; ``find_unused`` is for runs whose
    parameters are frozen for a while."""
    import lightning as L

    from scriba.trainer.cluster import Layout, trainer_arguments

    accelerator, devices = parse_device(g.device)
    pl_logger: Any = False
    if cfg.pl_logger == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        # the guide's default: a folder (ketos_train, ketos_pretrain) in the working directory
        pl_logger = TensorBoardLogger(save_dir=cfg.log_dir or os.getcwd(), name=logger_name)
    elif cfg.pl_logger:
        raise UsageError(f"unknown --logger {cfg.pl_logger!r} (expected tensorboard)")

    val_kw: dict[str, Any] = (
        {"check_val_every_n_epoch": int(cfg.freq), "val_check_interval": 1.0}
        if cfg.freq > 1
        else {"check_val_every_n_epoch": 1, "val_check_interval": float(cfg.freq)}
    )
    max_epochs = cfg.epochs if cfg.quit == "fixed" or (cfg.quit == "aneal" and cfg.epochs > 0) else -1
    quiet_lightning()
    from scriba.trainer.callbacks import TimeBudget
    from scriba.trainer.checkpoint_io import AtomicCheckpointIO

    if cfg.max_time:
        # Lightning's Timer stops at a batch boundary and its loop validates before stopping
        callbacks = [*callbacks, TimeBudget(cfg.max_time)]

    return L.Trainer(
        accelerator=accelerator,
        **trainer_arguments(processes or Layout(), accelerator, devices, find_unused=find_unused),
        precision=machine.resolve_precision(g, accelerator, task=task),  # type: ignore[arg-type]
        max_epochs=max_epochs,
        min_epochs=min_epochs,
        gradient_clip_val=cfg.gradient_clip_val or None,
        accumulate_grad_batches=accumulate_grad_batches,
        callbacks=callbacks,
        logger=pl_logger,
        log_every_n_steps=10,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic="warn" if g.deterministic else None,
        use_distributed_sampler=False,
        default_root_dir=str(out),
        plugins=[AtomicCheckpointIO()],
        **val_kw,
    )


def fit(trainer: Any, module: Any, datamodule: Any, ckpt_path: str | None) -> bool:
    """Runs ``trainer.fit`` (resuming from ``ckpt_path``); True when it was interrupted (Ctrl-C, SIGTERM)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from scriba.trainer.callbacks import Interrupted

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except (SIGTERMException, KeyboardInterrupt, Interrupted):
        return True
    return False


def record_run(result: Any, trainer: Any, module: Any, run_state: Any, reporter: Any) -> None:
    """Copies what a finished or interrupted fit leaves (history, epochs, steps, speed, abort checkpoint)."""
    result.abort_checkpoint = run_state.abort_path
    result.history = list(module.history)
    result.epochs = trainer.current_epoch
    result.steps = trainer.global_step
    result.lines_per_second = list(reporter.lines_per_second)


def export_best(ckpt_cb: Any, cfg: Any, out: Path, result: Any, what: str) -> float | None:
    """Converts ``ckpt_cb``'s best checkpoint to ``out/best_<score>`` in ``cfg.weights_format``, records the
    file in ``result`` (``weights``, ``best_checkpoint``) and returns the score; None, with a warning, when no
    validation run finished with a finite ``what`` (accuracy, loss)."""
    from scriba.weights import save_weights
    from scriba.weights.checkpoint import model_from_checkpoint, read_checkpoint_dict

    best, score = ckpt_cb.best_model_path, ckpt_cb.best_model_score
    if not best or score is None or not math.isfinite(float(score)):
        logger.warning("no validation run finished with a %s: no best model to convert", what)
        return None
    value = float(score)
    model = model_from_checkpoint(read_checkpoint_dict(best), best)
    path = save_weights(model, out / f"best_{value:.4f}.safetensors", cfg.weights_format)
    logger.info("converted best model %s (%s %.4f) to %s", best, what, value, path)
    result.weights, result.best_checkpoint = str(path), best
    return value


def stop_reason(cfg: Any, trainer: Any, early: Any) -> str:
    """Why an uninterrupted run ended: ``early``, ``aneal``, ``time``, ``fixed`` or ``finished``."""
    from lightning.pytorch.callbacks import Timer

    if early is not None and early.stopped_epoch > 0:
        return "early"
    if cfg.quit == "aneal" and trainer.should_stop:
        return "aneal"
    remaining = next((cb.time_remaining() for cb in trainer.callbacks if isinstance(cb, Timer)), None)
    if remaining is not None and remaining <= 0:
        return "time"
    return cfg.quit if cfg.quit == "fixed" else "finished"


def quiet_lightning() -> None:
    """Silences Lightning's info lines (GPU available, TPU...) and its warnings about our deliberate choices,
    until the job returns (see :func:`scriba.machine.tuned`)."""
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric.utilities.seed",
        "lightning.pytorch.trainer.connectors.signal_connector",
        "lightning.fabric.utilities.distributed",
    ):
        machine.set_logger_level(name, logging.WARNING)
    for message in (
        ".*does not have many workers.*",
        ".*smaller than the logging interval.*",
        ".*`training_step` returned `None`.*",
        ".*train_dataloader yielded None.*",
        ".*treespec, LeafSpec.*",
        ".*exists and is not empty.*",
        ".*resuming from a checkpoint that ended before the epoch ended.*",
        # DDP: the validation figures are reduced by the module itself and equal on every process
        ".*sync_dist=True.*",
        # oneDNN returns some weight gradients in another memory layout; DDP copies them into its buckets
        ".*Grad strides do not match bucket view strides.*",
    ):
        machine.ignore_warnings(message)
