"""Typed configuration: every default of every command lives here, once.

Field names are the Python parameter names of the ``ketos`` options (they are also the keys of experiment
files), e.g. ``checkpoint_path`` for ``-o/--output`` and ``rop_patience`` for ``--sched-patience``.
The CLI reads its defaults and help from these classes; the library API takes these objects.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

# kraken 7's default network (`-s KRAKEN_SPEC` trains it)
KRAKEN_SPEC = (
    "[1,120,0,1 Cr3,13,32 Do0.1,2 Mp2,2 Cr3,13,32 Do0.1,2 Mp2,2 Cr3,9,64 Do0.1,2 Mp2,2 Cr3,9,64 Do0.1,2 "
    "S1(1x0)1,3 Lbx200 Do0.1,2 Lbx200 Do0.1,2 Lbx200 Do]"
)
# scriba's: 64-pixel lines, 3x3 convolutions and a max pool over the rows left, kraken's three BiLSTMs of 200.
# A fifth of kraken's FLOPs for the same line image (1.2 against 5.9 GFLOP forward for a line 1200 px wide at
# 120 px), 2.1-2.4x its lines/s on a CPU. 12 minutes from scratch on 2 cores, both with --aux-ctc 0.1: test
# CER froc_mss pages 38.7 -> 14.6 %, openiti_arabic 10.3 -> 8.3 % against kraken's network (bench/RESULTS.md).
# kraken 7.1.1 loads and runs it (plain VGSL).
DEFAULT_SPEC = (
    "[1,64,0,1 Cr3,3,32 Mp2,2 Cr3,3,64 Mp2,2 Cr3,3,96 Mp2,2 Cr3,3,96 Mp8,1 S1(1x0)1,3 "
    "Lbx200 Do0.2,2 Lbx200 Do0.2,2 Lbx200 Do0.2]"
)

PRECISIONS = (
    "auto",
    "transformer-engine",
    "transformer-engine-float16",
    "16-true",
    "16-mixed",
    "bf16-true",
    "bf16-mixed",
    "32-true",
    "64-true",
)
FORMAT_TYPES = ("path", "xml", "alto", "page", "binary")
COMPILE_FORMAT_TYPES = ("path", "xml", "alto", "page")
LINETYPES = ("baselines", "bbox")
NORMALIZATIONS = ("NFD", "NFKD", "NFC", "NFKC")
BASE_DIRS = ("L", "R", "auto")
QUIT_MODES = ("early", "fixed", "aneal")
OPTIMIZERS = ("Adam", "SGD", "RMSprop", "Lamb", "AdamW")
SCHEDULES = ("constant", "1cycle", "exponential", "step", "reduceonplateau", "cosine", "cosine_warm_restarts")
RESIZE_MODES = ("add", "union", "both", "new", "fail")
RESIZE_ALIASES = {"add": "union", "both": "new"}
WEIGHTS_FORMATS = ("safetensors", "coreml")
LOGGERS = ("tensorboard",)
WEIGHT_GRADIENT_LAYOUTS = ("auto", "nhwc", "nchw")


@dataclass
class GlobalConfig:
    """Options of the ``ketos`` group, shared by every subcommand."""

    device: str = "auto"
    # "auto": bf16-mixed for `ketos train` on a CPU with native bfloat16 (AVX-512 BF16 or AMX), where it is
    # about 1.5x faster at the same accuracy; 32-true everywhere else (GPUs, pretraining, `ketos test`)
    precision: str = "auto"
    num_workers: int = 1
    num_threads: int = 1
    # DDP processes on this node (each with num_threads threads); None: one per device of a device list, else 1
    processes: int | None = None
    num_nodes: int = 1
    seed: int | None = None
    deterministic: bool = False
    verbose: int = 0
    # machine tuning (scriba.machine); a resumed run takes these from the caller, not from the checkpoint.
    # Preprocessed (compressed) lines of both sets are kept in memory when they fit in this many MiB; 0: never
    cache_mb: float = 2048.0
    # lines per forward pass on CPU (a divisor of the batch size; gradients are summed to the whole batch's);
    # None sizes the passes to the lines and the CPU, 0 keeps whole batches
    micro_batch: int | None = None
    # memory layout of the convolutions' weight gradients on CPU; the values agree, only the speed differs.
    # "auto": nchw on AVX2-only CPUs (oneDNN's NHWC weight-gradient kernel is slow there), nhwc elsewhere
    weight_gradient_layout: str = "auto"


# options that came after checkpoints already existed, with the value that continues such a checkpoint's run
# as it was started (a resumed run takes its options from the checkpoint)
ADDED_OPTIONS: dict[str, Any] = {"aux_ctc": 0.0, "ema": 0.0, "max_time": 0.0}


@dataclass
class TextConfig:
    """How transcriptions are read: Unicode normalization, whitespace, bidi reordering, base direction."""

    normalization: str | None = None
    normalize_whitespace: bool = True
    bidi_reordering: bool = True
    base_dir: str = "auto"


@dataclass
class LineConfig(TextConfig):
    """Where lines are cut from (data format, line geometry), with how much padding, how many a batch."""

    format_type: str = "xml"
    linetype: str | None = None
    padding: int = 16
    batch_size: int = 1


@dataclass
class DataConfig(LineConfig):
    """Where the lines come from and how their text and images are prepared.

    ``training_data``/``evaluation_data`` hold data files (pages, line images, datasets), already expanded
    from manifests and globs by the caller.
    """

    training_data: list[str] = field(default_factory=list)
    evaluation_data: list[str] = field(default_factory=list)
    legacy_polygons: bool = False
    augment: bool = False
    partition: float = 0.9
    codec: dict[str, Any] | str | None = None


@dataclass
class OptimConfig:
    """Stopping, optimizer and learning-rate schedule (shared by train and pretrain)."""

    checkpoint_path: str = "model"
    freq: float = 1.0
    quit: str = "early"
    epochs: int = -1
    min_epochs: int = 0
    lag: int = 10
    min_delta: float = 0.0
    # a wall-clock budget in minutes (0: none): once spent, the run validates once more and stops; a resumed
    # run gets what the checkpoint had left
    max_time: float = 0.0
    optimizer: str = "AdamW"
    lrate: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    gradient_clip_val: float = 1.0
    accumulate_grad_batches: int = 1
    warmup: int = 0
    # kraken keeps 1e-3 constant (gamma 0.1, patience 5); lowering the rate 0.3x once validation stalls for two
    # runs lifts froc_mss from ~77 % (where a constant rate leaves it) past 84 % within an epoch or two
    schedule: str = "reduceonplateau"
    gamma: float = 0.3
    step_size: int = 10
    rop_patience: int = 1
    # epochs of the cosine schedule; 0 (scriba's own value) anneals over the whole run: --epochs, else --max-time
    cos_t_max: int = 10
    cos_min_lr: float = 1e-6
    pl_logger: str | None = None
    log_dir: str | None = None


@dataclass
class TrainConfig(DataConfig, OptimConfig):
    """``ketos train``."""

    spec: str = DEFAULT_SPEC
    # kraken: -B 1 at 1e-3 without warm-up, which kept kraken's network on CTC's all-blank plateau (froc_mss,
    # one epoch: 7 % val accuracy at 1e-3, 34 % at 3e-4). With the default network -B 1 at 6e-4 beat 3e-4, and
    # -B 4 at 1.2e-3 (twice the rate: the square root of the batch) with 200 warm-up steps trains 1.5-1.8x the
    # lines/s on 2 cores and after 12 minutes had 17 % fewer test errors on froc pages (8.01 against 9.68 %),
    # 58 % fewer on cremma (14.75 against 35.19 %), as many on openiti (4.31 against 4.35 %), bench/RESULTS.md.
    # -B 16 stays on the plateau there: leaving it takes about a thousand optimizer steps, whatever the batch.
    batch_size: int = 4
    lrate: float = 1.2e-3
    warmup: int = 200
    load: str | None = None
    resume: str | None = None
    weights_format: str = "safetensors"
    freeze_backbone: int = 0
    resize: str = "fail"
    # decay per optimizer step of an exponential moving average of the weights that validation, checkpoints
    # and the exported model use (0: off; kraken has none). After 12 minutes on 2 cores it lowered test CER
    # on openiti (2.73 -> 2.33 %) and froc_mss pages (5.74 -> 5.02 %), bench/RESULTS.md
    ema: float = 0.999
    # weight of a train-only CTC loss from a head on the features entering the first recurrent layer (0: off;
    # the exported weights do not hold the head). It shortens CTC's all-blank plateau: after 12 minutes on 2
    # cores, test CER 88.6 -> 38.7 % on froc_mss pages and 16.8 -> 10.3 % on openiti_arabic (bench/RESULTS.md)
    aux_ctc: float = 0.1


@dataclass
class PretrainConfig(DataConfig, OptimConfig):
    """``ketos pretrain`` (wav2vec2-style masked contrastive pretraining)."""

    spec: str = DEFAULT_SPEC
    load: str | None = None
    resume: str | None = None
    weights_format: str = "safetensors"
    checkpoint_path: str = "model"
    min_epochs: int = 100
    lrate: float = 1e-6
    weight_decay: float = 0.01
    schedule: str = "cosine"
    cos_t_max: int = 100
    cos_min_lr: float = 1e-7
    warmup: float = 32000  # type: ignore[assignment]  # kraken's pretraining takes a float here
    mask_width: int = 4
    mask_prob: float = 0.5
    num_negatives: int = 100
    logit_temp: float = 0.1


@dataclass
class TestConfig(LineConfig):
    """``ketos test``."""

    model: str | None = None
    test_data: list[str] = field(default_factory=list)
    no_legacy_polygons: bool = False
    output_json: str | None = None
    output_html: str | None = None
    # beam search with a label language model (`ketos lm build`); None decodes greedily. The weight and
    # bonus defaults are within 1 % of the best validation point on froc_mss and openiti_arabic
    # (bench/RESULTS.md); the bonus is added per frame to every non-blank label; tune them on your own
    # validation lines (`ketos lm tune`, LMTuneConfig).
    lm: str | None = None
    lm_weight: float = 1.5
    lm_bonus: float = 2.5
    beam_size: int = 16


@dataclass
class LMTuneConfig(TestConfig):
    """``ketos lm tune``: every (weight, bonus) pair of the grid decodes ``test_data`` (validation lines) with
    ``lm``; the pair with the fewest errors is what to give ``ketos test --lm``. This grid's best point on froc_mss's
    validation lines, weight 1.5 and bonus 2.5, inside it, became ``TestConfig``'s default (bench/RESULTS.md)."""

    lm_weights: list[float] = field(default_factory=lambda: [0.3, 0.6, 1.0, 1.5, 2.0, 2.5])
    lm_bonuses: list[float] = field(default_factory=lambda: [0.0, 0.75, 1.5, 2.5, 3.5])


@dataclass
class LMBuildConfig(TextConfig):
    """``ketos lm build``: a character n-gram language model in a recognition model's label space."""

    training_data: list[str] = field(default_factory=list)
    format_type: str = "path"
    linetype: str | None = None
    model: str | None = None
    output: str = "chars.arpa"
    order: int = 6


@dataclass
class CompileConfig:
    """``ketos compile``."""

    ground_truth: list[str] = field(default_factory=list)
    output: str = "dataset.arrow"
    format_type: str = "xml"
    files: list[str] = field(default_factory=list)
    linetype: str | None = None
    force_type: str | None = None
    skip_empty_lines: bool = True
    recordbatch_size: int = 100
    legacy_polygons: bool = False


@dataclass
class ConvertConfig:
    """``ketos convert``."""

    checkpoints: list[str] = field(default_factory=list)
    output: str = "model.safetensors"
    weights_format: str = "safetensors"


def default(cls: type, name: str) -> Any:
    """The default of field ``name`` of config class ``cls`` (for CLI option declarations)."""
    for f in fields(cls):
        if f.name == name:
            if f.default_factory is not MISSING:
                return f.default_factory()
            return f.default
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def field_names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def check_numbers(cfg: Any) -> None:
    """Refuses numeric fields of a configuration that are not finite numbers of their type.

    The command line checks its options itself; this covers configurations built in code (``lrate=nan``,
    ``epochs=1.5``, ``batch_size=True``), which would otherwise fail deep inside torch or train on garbage.
    """
    from scriba.errors import UsageError

    for f in fields(cfg):
        value = getattr(cfg, f.name)
        kind = str(f.type).replace(" | None", "")
        if value is None and "None" in str(f.type):
            continue
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise UsageError(f"{f.name} must be a whole number, not {value!r}")
        if kind == "float" and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        ):
            raise UsageError(f"{f.name} must be a finite number, not {value!r}")


def build(cls: type, values: dict[str, Any]) -> Any:
    """Instantiate ``cls`` from ``values``, ignoring keys it does not declare."""
    names = field_names(cls)
    return cls(**{k: v for k, v in values.items() if k in names})
