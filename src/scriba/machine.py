"""The one place that knows what hardware scriba runs on, and how a job tunes the process to it.

- :func:`cpu_features`, the one CPU probe (torch's kernel capability and the flags of ``/proc/cpuinfo``, read
  once per process): whether the CPU has AVX2 but no AVX-512, and whether it computes bfloat16 natively.
- :func:`keep_freed_memory`, the glibc allocator tuning (``mallopt``) for training and ``ketos test``.
- The sizing a job asks for: :func:`micro_batch` (lines per forward pass on CPU), :func:`cache_bytes` (the
  budget for preprocessed lines kept in memory), :func:`weight_gradient_layout`, :func:`resolve_precision`.
- :func:`tuned`, the context manager a job runs in: it applies the thread count, the allocator tuning and the
  weight-gradient layout, and puts the process back as it found it when the job returns. Its :class:`Tuning`
  logs what was chosen and gives the record stored in the checkpoints (``scriba["machine"]``); on a resumed
  run each setting that differs from the checkpoint's is named in a warning.

Every setting comes from :class:`~scriba.config.GlobalConfig` (``--threads``, ``--precision``, ``--cache-mb``,
``--micro-batch``, ``--weight-gradient-layout``); nothing here reads environment variables of its own.
torch is imported inside the functions, so that importing this module stays fast.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from scriba.config import WEIGHT_GRADIENT_LAYOUTS, GlobalConfig
from scriba.errors import UsageError

logger = logging.getLogger(__name__)

CPUINFO = "/proc/cpuinfo"
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

# about this many input pixels per forward pass on CPU. Measured on AVX-512 BF16 (2026-12-07, 2 threads, froc
# lines): the default network at -B 4 ran 38 lines/s whole, 28 as two passes of 2, 21 as four of 1 (fp32: 27.7
# against 21.4 as 2x2); at -B 16, 8 lines per pass 45, 16 or 4 lines 41, 2 lines 35; kraken's network at -B 16
# 10.7 with 4 per pass, 9.6 with 2, 8.3 with 1. On AVX2 only: kraken's network, -B 16, one line per pass
# 4.9-5.0, four 5.3-5.5, eight 4.7-4.9, sixteen 4.0-4.1. So about four of kraken's 120-px lines everywhere.
MICRO_PIXELS = 800_000


# -- the CPU ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuFeatures:
    """What the CPU offers: torch's kernel capability (``AVX512``, ``AVX2``, ``DEFAULT``...) and its flags."""

    capability: str
    flags: frozenset[str] = frozenset()

    @property
    def avx2_only(self) -> bool:
        """torch's and oneDNN's kernels run at AVX2: the CPU has no AVX-512."""
        return self.capability == "AVX2"

    @property
    def native_bf16(self) -> bool:
        """The CPU computes bfloat16 natively (AVX-512 BF16 or AMX), where bf16 convolutions pay."""
        return bool(self.flags & _BF16_FLAGS)


def probe_cpu(cpuinfo: str = CPUINFO) -> CpuFeatures:
    """Reads the CPU's features (see :func:`cpu_features`, which does this once per process)."""
    import torch

    flags: frozenset[str] = frozenset()
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = frozenset(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass  # not Linux: no flags, so no native bf16 assumed
    return CpuFeatures(torch.backends.cpu.get_cpu_capability(), flags)


@functools.cache
def cpu_features() -> CpuFeatures:
    """This machine's :class:`CpuFeatures`, probed once."""
    return probe_cpu()


def uses_gpu(accelerator: str) -> bool:
    """Whether the run will train on a CUDA device."""
    import torch

    return accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())


# -- the allocator ---------------------------------------------------------------------------------------------

# glibc's mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 * 1024**2
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int


def keep_freed_memory() -> bool:
    """Lets glibc keep freed heap memory for the next training step or batch instead of giving it back.

    Every step frees and reallocates the same activation buffers. With glibc's defaults the top of the heap is
    returned to the kernel and large buffers are fresh mappings, so the kernel faults in and zeroes their pages
    again each step: on froc lines about 95,000 page faults a second, and 10-14 % of a training step on a
    virtual machine, where a fault is dear. Buffers up to 32 MiB come from the heap (a default-spec line's
    largest activation at -B 1 is about 23 MB) and up to 2 GiB of freed memory stay mapped. Measured: default
    spec, 48 froc lines, -B 1, 2 epochs: 2.37 M minor page faults -> 0.33 M, 5.7 -> 6.5 lines/s; peak memory
    of a training run up to 30 % higher. ``ketos test`` gains as much from these values as from the 256 MiB
    thresholds its own copy sets: froc's model on 120 test lines, --threads 1, page faults while evaluating
    31,400 (glibc's defaults) -> 23,500 (256 MiB) / 23,800 (these) at -B 1 and 75,200 -> 46,700 / 38,000 at
    -B 16, peak RSS 421 -> 447 / 413 MB at -B 16, CPU time 3.1 -> 2.6 / 2.5 s at -B 1, the same predictions.
    DataLoader workers fork from this process and inherit the setting.

    Not undone when a job returns: glibc cannot report its current values, and once a threshold is set its
    dynamic mmap threshold stays off. Nothing is changed where the user set glibc's own ``MALLOC_*`` tunables
    or where the C library is not glibc. Returns whether the settings are in effect.
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


# -- what a job asks for ---------------------------------------------------------------------------------------


def cache_bytes(g: GlobalConfig) -> int:
    """How many bytes of preprocessed lines may be kept in memory (``--cache-mb``; 0: none)."""
    if g.cache_mb < 0:
        raise UsageError(f"--cache-mb must not be negative, got {g.cache_mb}")
    return int(g.cache_mb * 1024**2)


def weight_gradient_layout(g: GlobalConfig, features: CpuFeatures | None = None) -> str:
    """``--weight-gradient-layout`` with ``auto`` resolved: ``nchw`` on AVX2-only CPUs, else ``nhwc``.

    On AVX2-only CPUs oneDNN has no brgemm kernel for NHWC weight gradients and its fallback is slow: default
    spec, second convolution (32 -> 32 channels, 60 x 704): 34 ms against 21.5 ms on the blocked NCHW layout,
    of which the two reorders cost about 2 ms. With AVX-512 the NHWC kernels are fast.
    """
    layout = (g.weight_gradient_layout or "auto").lower()
    if layout not in WEIGHT_GRADIENT_LAYOUTS:
        raise UsageError(
            f"invalid --weight-gradient-layout {g.weight_gradient_layout!r} "
            f"(expected one of {', '.join(WEIGHT_GRADIENT_LAYOUTS)})"
        )
    if layout == "auto":
        return "nchw" if (features or cpu_features()).avx2_only else "nhwc"
    return layout


def micro_batch(g: GlobalConfig, batch_size: int, height: int, widths: Sequence[int]) -> int:
    """Lines per forward pass on CPU: a batch of large lines runs faster as several smaller passes (less
    padding, activations nearer the cache), with gradients accumulated to the same sum.

    Always a divisor of the batch size. ``--micro-batch N``: the largest not above N (0 keeps whole batches);
    by default the largest whose lines hold about ``MICRO_PIXELS`` input pixels, so small lines and small
    networks keep their whole batches.
    """
    if g.micro_batch is not None and g.micro_batch < 0:
        raise UsageError(f"--micro-batch must not be negative, got {g.micro_batch}")
    if batch_size <= 1 or g.micro_batch == 0:
        return batch_size
    if g.micro_batch is not None:
        fits = g.micro_batch
    elif not widths:
        return batch_size
    else:
        per_line = max(1, height) * (sum(widths) / len(widths))
        fits = max(1, int(MICRO_PIXELS // per_line))
    return max(d for d in range(1, batch_size + 1) if batch_size % d == 0 and d <= fits)


def resolve_precision(g: GlobalConfig, accelerator: str, *, task: str, features: CpuFeatures | None = None) -> str:
    """The Lightning precision of a run: ``g.precision``, with ``auto`` resolved for ``task`` ("train" gets
    bf16-mixed on a CPU with native bfloat16, everything else 32-true)."""
    if g.precision != "auto":
        return g.precision
    if task == "train" and not uses_gpu(accelerator) and (features or cpu_features()).native_bf16:
        logger.info("precision auto: bf16-mixed (this CPU computes bfloat16 natively; validation stays fp32)")
        return "bf16-mixed"
    return "32-true"


# -- a job's tuning --------------------------------------------------------------------------------------------


@dataclass
class Tuning:
    """What :func:`tuned` applied for a job, and the choices the job adds (precision, micro-batch)."""

    features: CpuFeatures
    threads: int
    keeps_freed_memory: bool
    cache_bytes: int
    weight_gradient_layout: str
    _undo: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def record(self, **chosen: Any) -> dict[str, Any]:
        """The settings as plain values, for the log and the checkpoint; ``chosen`` adds the job's own."""
        import lightning
        import torch

        return {
            "threads": self.threads,
            "cpu": self.features.capability,
            "native_bf16": self.features.native_bf16,
            "keep_freed_memory": self.keeps_freed_memory,
            "cache_mb": round(self.cache_bytes / 1024**2, 3),
            "weight_gradient_layout": self.weight_gradient_layout,
            **chosen,
            "torch": str(torch.__version__),  # a TorchVersion, which weights_only loading refuses
            "lightning": str(lightning.__version__),
        }

    def report(self, ckpt: dict[str, Any] | None = None, **chosen: Any) -> dict[str, Any]:
        """Logs the settings in one line and returns their record; for a resumed run (``ckpt``), warns once
        for each setting that differs from the one stored in the checkpoint."""
        rec = self.record(**chosen)
        logger.info("machine: %s", ", ".join(f"{k} {v}" for k, v in rec.items()))
        stored = ((ckpt or {}).get("scriba") or {}).get("machine") or {}
        for key, value in rec.items():
            if key in stored and stored[key] != value:
                logger.warning("resumed run: %s is %s here, %s where the checkpoint was written", key, value, stored[key])
        return rec

    def set_logger_level(self, name: str, level: int) -> None:
        """Sets a logger's level until the job returns."""
        log = logging.getLogger(name)
        before = log.level
        log.setLevel(level)
        self._undo.append(lambda: log.setLevel(before))

    def ignore_warnings(self, message: str) -> None:
        """Ignores warnings whose text matches ``message`` (a regular expression) until the job returns."""
        before = list(warnings.filters)
        warnings.filterwarnings("ignore", message=message)
        added = warnings.filters[0]
        if added in before:
            return  # the same filter was there already: it stays

        def remove() -> None:
            if added in warnings.filters:
                warnings.filters.remove(added)  # type: ignore[attr-defined]  # a list, typed as a Sequence

        self._undo.append(remove)


_active: list[Tuning] = []


def current() -> Tuning | None:
    """The tuning of the job that is running (None outside :func:`tuned`)."""
    return _active[-1] if _active else None


def set_logger_level(name: str, level: int) -> None:
    """Sets a logger's level until the running job returns (for good outside :func:`tuned`)."""
    t = current()
    if t is None:
        logging.getLogger(name).setLevel(level)
    else:
        t.set_logger_level(name, level)


def ignore_warnings(message: str) -> None:
    """Ignores warnings matching ``message`` until the running job returns (for good outside :func:`tuned`)."""
    t = current()
    if t is None:
        warnings.filterwarnings("ignore", message=message)
    else:
        t.ignore_warnings(message)


@contextmanager
def tuned(g: GlobalConfig) -> Iterator[Tuning]:
    """Runs a job with ``g``'s machine settings, and puts the process back as it was when the job returns.

    Applied: torch's thread count (``--threads``), glibc keeping freed memory (:func:`keep_freed_memory`) and
    the convolutions' weight-gradient layout. Restored on return: the thread count, the layout, torch's
    deterministic-algorithms mode and cuDNN benchmarking (which Lightning sets for ``--deterministic``), and
    the logger levels and warning filters set through :meth:`Tuning.set_logger_level` and
    :meth:`Tuning.ignore_warnings`. Left as they are: the allocator tuning (see :func:`keep_freed_memory`) and
    the random generators, which the run seeded on purpose.
    """
    import torch

    from scriba.vgsl.layers import set_weight_gradient_layout

    features = cpu_features()
    layout = weight_gradient_layout(g, features)
    limit = cache_bytes(g)
    threads = max(1, g.num_threads)
    saved_threads = torch.get_num_threads()
    saved_deterministic = (torch.are_deterministic_algorithms_enabled(),
                           torch.is_deterministic_algorithms_warn_only_enabled())
    saved_benchmark = torch.backends.cudnn.benchmark
    saved_cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    # GPU steps keep their buffers on the device: the host heap is not where their time goes
    on_gpu = g.device.startswith("cuda") or (g.device in ("auto", "") and torch.cuda.is_available())
    t = Tuning(features, threads, False if on_gpu else keep_freed_memory(), limit, layout)
    torch.set_num_threads(threads)
    saved_layout = set_weight_gradient_layout(layout)
    _active.append(t)
    try:
        yield t
    finally:
        _active.remove(t)
        for undo in reversed(t._undo):
            undo()
        set_weight_gradient_layout(saved_layout)
        torch.set_num_threads(saved_threads)
        torch.use_deterministic_algorithms(saved_deterministic[0], warn_only=saved_deterministic[1])
        torch.backends.cudnn.benchmark = saved_benchmark
        if saved_cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved_cublas
