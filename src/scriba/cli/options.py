"""Option declarations shared by several subcommands; defaults and choices come from :mod:`scriba.config`."""

from __future__ import annotations

import math
from collections.abc import Callable

import click

from scriba import config as C

Decorator = Callable[[Callable], Callable]


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange without ``nan`` and ``inf``, which pass its bounds checks (``nan < 0`` is false)."""

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


class FloatList(click.ParamType):
    """Comma-separated numbers, e.g. ``0.3,0.6,1.0`` (a grid's values; the library checks their range)."""

    name = "list"

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            return list(value)
        try:
            return [float(v) for v in str(value).split(",") if v.strip()]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers.", param, ctx)


def apply(*decorators: Decorator) -> Decorator:
    def wrap(f: Callable) -> Callable:
        for d in reversed(decorators):
            f = d(f)
        return f

    return wrap


def data_format_options(cls: type, *, manifests: tuple[str, ...]) -> list[Decorator]:
    """``-t``/``-e`` style manifests, ``-f``, ``--linetype``, ``--pad``, ``-B``."""
    d = lambda name: C.default(cls, name)  # noqa: E731
    opts: list[Decorator] = [
        click.option("-B", "--batch-size", type=click.IntRange(1), default=d("batch_size"), help="Batch sample size."),
        click.option("--pad", "padding", type=click.IntRange(0), default=d("padding"),
                     help="Left and right padding around lines."),
        click.option("-f", "--format-type", type=click.Choice(C.FORMAT_TYPES), default=d("format_type"),
                     help="Data format: line images with .gt.txt (path), ALTO/PageXML pages (xml, alto, page) "
                          "or compiled .arrow datasets (binary)."),
        click.option("--linetype", type=click.Choice(C.LINETYPES), default=None,
                     help="Line geometry to extract from XML pages (default: the model's or baselines)."),
    ]
    helps = {
        "training_data": ("-t", "--training-data", "File(s) with paths to training data."),
        "evaluation_data": ("-e", "--evaluation-data",
                            "File(s) with paths to evaluation data. Overrides the `-p` parameter."),
        "test_data": ("-e", "--test-data", "File(s) with paths to evaluation data."),
    }
    for name in manifests:
        short, long, text = helps[name]
        opts.append(click.option(short, long, name, multiple=True,
                                 type=click.Path(exists=True, dir_okay=False), help=text))
    return opts


def text_options(cls: type) -> list[Decorator]:
    d = lambda name: C.default(cls, name)  # noqa: E731
    return [
        click.option("-u", "--normalization", type=click.Choice(C.NORMALIZATIONS), default=d("normalization"),
                     help="Ground truth Unicode normalization."),
        click.option("--normalize-whitespace/--no-normalize-whitespace", "-n", default=d("normalize_whitespace"),
                     help="Normalizes unicode whitespace."),
        click.option("--reorder/--no-reorder", "bidi_reordering", default=d("bidi_reordering"),
                     help="Reordering of code points to display order."),
        click.option("--base-dir", type=click.Choice(C.BASE_DIRS), default=d("base_dir"),
                     help="Base text direction of the data; `auto` lets values in the input files decide."),
    ]


def optim_options(cls: type, *, warmup_type: type = int, min_delta_help: str | None = None) -> list[Decorator]:
    """Stopping, optimizer and learning-rate schedule options shared by train and pretrain."""
    d = lambda name: C.default(cls, name)  # noqa: E731
    return [
        click.option("-o", "--output", "checkpoint_path", type=click.Path(file_okay=False),
                     default=d("checkpoint_path"), help="Directory to save checkpoints into."),
        click.option("--weights-format", type=click.Choice(C.WEIGHTS_FORMATS), default=d("weights_format"),
                     help="Format of the final weights file."),
        click.option("-s", "--spec", default=d("spec"), help="VGSL spec of the network to train."),
        click.option("-i", "--load", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Load existing weights or checkpoint to start a new training run from."),
        click.option("--resume", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Continue an interrupted run from its checkpoint (all state and options restored)."),
        click.option("-F", "--freq", type=FiniteFloatRange(0, min_open=True), default=d("freq"),
                     help="Checkpoint and validation frequency in epochs (a fraction validates within epochs; "
                          "above 1 it must be an integer)."),
        click.option("-q", "--quit", type=click.Choice(C.QUIT_MODES), default=d("quit"),
                     help="Stop condition: `early` stopping, `fixed` number of epochs, or `aneal` "
                          "(stop when the schedule has annealed the rate to its floor)."),
        click.option("-N", "--epochs", type=int, default=d("epochs"), help="Number of epochs to train for."),
        click.option("--min-epochs", type=click.IntRange(0), default=d("min_epochs"),
                     help="Minimal number of epochs to train for when using early stopping."),
        click.option("--lag", type=click.IntRange(1), default=d("lag"),
                     help="Number of evaluations to wait before stopping training without improvement."),
        click.option("--min-delta", type=FiniteFloatRange(0), default=d("min_delta"),
                     help=min_delta_help or "Minimum improvement of the validation accuracy to reset early stopping."),
        click.option("--max-time", type=FiniteFloatRange(0), default=d("max_time"),
                     help="Wall-clock budget in minutes (0: none); when it is spent the run validates and stops."),
        click.option("--optimizer", type=click.Choice(C.OPTIMIZERS), default=d("optimizer"), help="Optimizer."),
        click.option("-r", "--lrate", type=FiniteFloatRange(0, min_open=True), default=d("lrate"),
                     help="Learning rate."),
        click.option("-m", "--momentum", type=FiniteFloatRange(0), default=d("momentum"),
                     help="Momentum (SGD, RMSprop)."),
        click.option("-w", "--weight-decay", type=FiniteFloatRange(0), default=d("weight_decay"),
                     help="Weight decay."),
        click.option("--gradient-clip-val", type=FiniteFloatRange(0), default=d("gradient_clip_val"),
                     help="Gradient norm clipping value (0 disables)."),
        click.option("--accumulate-grad-batches", type=click.IntRange(1), default=d("accumulate_grad_batches"),
                     help="Number of batches to accumulate gradient across."),
        click.option("--warmup", type=FiniteFloatRange(0) if warmup_type is float else click.IntRange(0),
                     default=d("warmup"),
                     help="Number of steps to ramp up linearly to `lrate`." if warmup_type is int
                     else "Number of samples to ramp up linearly to `lrate`."),
        click.option("--schedule", type=click.Choice(C.SCHEDULES), default=d("schedule"),
                     help="Learning rate schedule. For 1cycle the cycle length is set by --epochs."),
        click.option("-g", "--gamma", type=FiniteFloatRange(0, 1, min_open=True), default=d("gamma"),
                     help="Decay factor for exponential, step and reduceonplateau schedules."),
        click.option("-ss", "--step-size", type=click.IntRange(1), default=d("step_size"),
                     help="Validation runs between decays for exponential and step schedules."),
        click.option("--sched-patience", "rop_patience", type=click.IntRange(0), default=d("rop_patience"),
                     help="Validation runs without improvement that reduceonplateau tolerates; it lowers the rate at the next one."),
        click.option("--cos-max", "cos_t_max", type=click.IntRange(0), default=d("cos_t_max"),
                     help="Epoch of minimal learning rate for the cosine schedules (0 for cosine: the end of "
                     "the run, --epochs or else the --max-time budget)."),
        click.option("--cos-min-lr", type=FiniteFloatRange(0), default=d("cos_min_lr"),
                     help="Minimal final learning rate for the cosine schedules."),
        click.option("-p", "--partition", type=FiniteFloatRange(0, 1, min_open=True), default=d("partition"),
                     help="Ground truth data partition ratio between train/validation set."),
        click.option("--augment/--no-augment", default=d("augment"), help="Enable image augmentation."),
        click.option("--logger", "pl_logger", type=click.Choice(C.LOGGERS), default=None,
                     help="Logger to record losses, accuracies and learning rate."),
        click.option("--log-dir", type=click.Path(file_okay=False), default=None,
                     help="Directory for the logger's files (default: a folder created in the current working "
                          "directory, ketos_train or ketos_pretrain)."),
        click.option("--legacy-polygons", is_flag=True, default=d("legacy_polygons"),
                     help="Use the legacy polygon extractor."),
    ]


# global options that a resumed run takes from its checkpoint (device, workers, threads and -v follow the caller)
_RESTORED_GLOBALS = ("precision", "seed", "deterministic")


def warn_ignored_with_resume() -> list[str]:
    """Names, in one warning, the options given with ``--resume`` that the checkpoint's own values override."""
    import logging

    from click.core import ParameterSource

    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT, ParameterSource.DEFAULT_MAP)
    ctx = click.get_current_context()
    ignored = []
    for param in ctx.command.params:
        if param.name != "resume" and ctx.get_parameter_source(param.name) in given:
            ignored.append("/".join(param.opts) if isinstance(param, click.Option) else param.human_readable_name)
    if ctx.parent is not None:
        for param in ctx.parent.command.params:
            if param.name in _RESTORED_GLOBALS and ctx.parent.get_parameter_source(param.name) in given:
                ignored.append("/".join(param.opts))
    if ignored:
        logging.getLogger(__name__).warning(
            "--resume continues with the options stored in the checkpoint; ignored: %s", ", ".join(ignored)
        )
    return ignored


def report_run(result, noun: str = "model") -> None:
    """Tell the user where the best weights are; an interrupted run exits with status 130."""
    if result.weights:
        click.echo(f"best {noun}: {result.weights}")
    if result.stopped == "interrupted":  # the job has said where its state is and how to resume
        raise SystemExit(130)


def ground_truth_argument(name: str = "ground_truth") -> Decorator:
    return click.argument(name, nargs=-1, type=click.Path())


def expand_inputs(manifests: tuple[str, ...] | list[str], positional: tuple[str, ...] | list[str]) -> list[str]:
    """Paths from manifests followed by positional paths/globs, through the data layer's resolver."""
    from scriba.data.sources import expand_paths, read_manifest

    paths: list[str] = []
    for manifest in manifests:
        paths.extend(read_manifest(manifest))
    paths.extend(expand_paths(list(positional)))
    return paths
