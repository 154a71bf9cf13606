"""The scaffolding every Lightning job here stands on (``ketos train``, ``ketos pretrain``).

In the order a job uses them: check the options, restore the configurations of a resumed run, prepare the output directory,
set up the machine (threads, device), seed the run, keep small datasets in memory, write the split, build
the Lightning trainer, fit, and tell how the run stopped. What differs between the jobs (data, network,
module, callbacks, the conversion of the best checkpoint) stays in each job.

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

from scriba.config import QUIT_MODES, WEIGHTS_FORMATS, GlobalConfig, build
from scriba.errors import ScribaError, UsageError

logger = logging.getLogger(__name__)

PARTITION_FILE = "partition.json"
# preprocessed (compressed) lines are kept in memory when both sets fit in this many bytes (SCRIBA_CACHE_MB
# overrides; 0 turns the cache off)
CACHE_LIMIT = 2 * 1024**3

C = TypeVar("C")


# -- start of a run --------------------------------------------------------------------------------------------


def check_run_options(cfg: Any) -> None:
    """Rejects values of the options every job has (``--quit``, ``--epochs``, ``--freq``, ``--weights-format``,
    batch sizes, ``--load``/``--resume``, the ``aneal`` schedule), with the option's name in the message."""
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
    if cfg.quit == "aneal":
        from scriba.trainer.optim import check_aneal

        check_aneal(cfg.schedule)


def restore_configs(cfg: C, g: GlobalConfig, *, key: str, task: str) -> tuple[C, GlobalConfig, dict[str, Any]]:
    """The configurations stored in the checkpoint ``cfg.resume`` under ``key`` (e.g. ``train_config``).

    Everything comes from the checkpoint except the machine settings of ``g`` (device, workers, threads,
    verbosity): they follow the machine the run continues on. Returns the configurations and the
    checkpoint; ``task`` (``training``) names the kind of checkpoint in the error for a foreign file.
    """
    from scriba.weights.checkpoint import read_checkpoint_dict

    resume = cfg.resume  # type: ignore[attr-defined]
    ckpt = read_checkpoint_dict(resume)
    entry = ckpt.get("scriba") or {}
    if key not in entry:
        raise ScribaError(f"not a scriba {task} checkpoint (no {task} configuration inside)", path=resume)
    stored = dict(entry[key])
    stored.update(resume=resume, load=None)
    gd = dict(entry.get("global_config") or {})
    gd.update(device=g.device, num_workers=g.num_workers, num_threads=g.num_threads, verbose=g.verbose)
    return build(type(cfg), stored), build(GlobalConfig, gd), ckpt


def prepare_output(path: str) -> Path:
    """Creates the output directory and checks that it can be written (a :class:`ScribaError` if not)."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".scriba-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ScribaError(f"output directory cannot be written ({exc.strerror or exc})", path=str(out)) from None
    return out


def parse_device(spec: str) -> tuple[str, Any]:
    """``--device`` (``auto``, ``cpu``, ``mps``, ``cuda``, ``cuda:N``) as Lightning's accelerator and devices."""
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


def setup_machine(g: GlobalConfig) -> tuple[str, Any]:
    """Sets torch's thread count and returns the accelerator and devices of ``g.device``."""
    import torch

    keep_freed_memory()
    torch.set_num_threads(max(1, g.num_threads))
    accelerator, devices = parse_device(g.device)
    if accelerator == "gpu":
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        wanted = devices if isinstance(devices, list) else [0]
        if not found or max(wanted) >= found:
            have = f"{found} CUDA device(s) (cuda:0 to cuda:{found - 1})" if found else "no CUDA device"
            raise UsageError(f"device {g.device!r} requested but this machine has {have}; use -d cpu or -d auto")
    elif accelerator == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError(f"device {g.device!r} requested but MPS is not available here; use -d cpu or -d auto")
    return accelerator, devices


# glibc's mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 * 1024**2  # glibc's largest allowed value on 64-bit systems
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int


def keep_freed_memory() -> bool:
    """Lets glibc keep freed heap memory for the next training step instead of giving it back to the kernel.

    Every step frees and reallocates the same activation buffers. With glibc's defaults the top of the heap is
    returned to the kernel and large buffers are fresh mappings, so the kernel faults in and zeroes their pages
    again each step: on froc lines about 95,000 page faults a second, and 10-14 % of a training step on a
    virtual machine, where a fault is dear. The peak memory of a training run grows by up to 30 %.
    Nothing is changed where the user set glibc's own ``MALLOC_*`` tunables or where the C library is not
    glibc. Returns whether the settings were applied.
    """
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), where bf16 convolutions pay."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(g: GlobalConfig, accelerator: str, *, task: str) -> str:
    """The Lightning precision of a run: ``g.precision``, with ``auto`` resolved for ``task`` ("train" gets
    bf16-mixed on a CPU with native bfloat16, everything else 32-true)."""
    if g.precision != "auto":
        return g.precision
    if task == "train" and not uses_gpu(accelerator) and cpu_has_bf16():
        logger.info("precision auto: bf16-mixed (this CPU computes bfloat16 natively; validation stays fp32)")
        return "bf16-mixed"
    return "32-true"


def uses_gpu(accelerator: str) -> bool:
    """Whether the run will train on a CUDA device."""
    import torch

    return accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())


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


def cache_limit() -> int:
    """How many bytes of preprocessed lines may be kept in memory (``SCRIBA_CACHE_MB`` overrides)."""
    env = os.environ.get("SCRIBA_CACHE_MB")
    return int(float(env) * 1024**2) if env else CACHE_LIMIT


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


def preload_if_small(train_ds: Any, val_ds: Any, workers: int) -> tuple[Any, Any]:
    """Both sets preloaded (see :func:`preload`) when they fit in :func:`cache_limit`, else unchanged."""
    if train_ds.estimated_bytes() + val_ds.estimated_bytes() <= cache_limit():
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
    if value is None or isinstance(value, (str, int, float, bool)):
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
    *,
    accelerator: str,
    devices: Any,
    out: Path,
    callbacks: list[Any],
    logger_name: str,
    min_epochs: int | None,
    accumulate_grad_batches: int,
    task: str = "train",
) -> Any:
    """The Lightning trainer for ``cfg``'s run length (``--quit``, ``--epochs``), validation frequency
    (``--freq``), clipping and ``--logger``; Lightning's own output is quieted."""
    import lightning as L

    pl_logger: Any = False
    if cfg.pl_logger == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

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
    return L.Trainer(
        accelerator=accelerator,
        devices=devices,
        precision=resolve_precision(g, accelerator, task=task),  # type: ignore[arg-type]
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


def stop_reason(cfg: Any, trainer: Any, early: Any) -> str:
    """Why an uninterrupted run ended: ``early``, ``aneal``, ``fixed`` or ``finished``."""
    if early is not None and early.stopped_epoch > 0:
        return "early"
    if cfg.quit == "aneal" and trainer.should_stop:
        return "aneal"
    return cfg.quit if cfg.quit == "fixed" else "finished"


def quiet_lightning() -> None:
    """Silences Lightning's info lines (GPU available, TPU...) and its warnings about our deliberate choices."""
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
