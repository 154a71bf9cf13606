"""The ``ketos`` command group: global options, experiment files, and one-line error reporting.

Nothing here imports torch or lightning: subcommands import the library inside their bodies so that
``ketos --help`` answers at once.
"""

from __future__ import annotations

import re
import sys
import traceback

import click

from scriba import __version__
from scriba.cli import compile as compile_cmd
from scriba.cli import convert as convert_cmd
from scriba.cli import lm as lm_cmd
from scriba.cli import pretrain as pretrain_cmd
from scriba.cli import test as test_cmd
from scriba.cli import train as train_cmd
from scriba.cli.config_file import apply_experiment_file
from scriba.config import PRECISIONS, WEIGHT_GRADIENT_LAYOUTS, GlobalConfig, default
from scriba.console import setup_logging
from scriba.errors import ScribaError

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?(,cuda:\d+)*)$")


def _check_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value is not None and not _DEVICE.match(value):
        raise click.BadParameter(
            f"{value!r} is not a device; use auto, cpu, mps, cuda:N or cuda:N,cuda:M", ctx=ctx, param=param
        )
    return value


def _g(name: str):
    return default(GlobalConfig, name)


@click.group(context_settings={"show_default": True, "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="ketos (scriba)")
@click.option("-d", "--device", default=_g("device"), callback=_check_device,
              help="Device: auto, cpu, mps, cuda:N or several GPUs as cuda:N,cuda:M.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=_g("precision"),
              help="Numerical precision (Lightning precision string); auto: bf16-mixed for training on a CPU "
              "with native bfloat16, 32-true otherwise.")
@click.option("--workers", "num_workers", type=click.IntRange(0), default=_g("num_workers"),
              help="Number of worker processes for data loading and compilation.")
@click.option("--threads", "num_threads", type=click.IntRange(1), default=_g("num_threads"),
              help="Number of threads for intra-op parallelism.")
@click.option("--cache-mb", "cache_mb", type=click.FloatRange(0), default=_g("cache_mb"),
              help="Keep the preprocessed lines in memory when both sets fit in this many MiB (0: never).")
@click.option("--micro-batch", "micro_batch", type=click.IntRange(0), default=_g("micro_batch"),
              help="Lines per forward pass when training on CPU (a divisor of the batch size; gradients are "
              "summed to the whole batch's); 0: whole batches; default: sized to the lines and the CPU.")
@click.option("--weight-gradient-layout", type=click.Choice(WEIGHT_GRADIENT_LAYOUTS),
              default=_g("weight_gradient_layout"),
              help="Memory layout of the convolutions' weight gradients on CPU (same values, other speed); "
              "auto: nchw on CPUs with AVX2 but no AVX-512, nhwc elsewhere.")
@click.option("--processes", type=click.IntRange(1), default=_g("processes"),
              help="DDP processes on this node (gloo with -d cpu, each with --threads threads); default: one per "
              "device of a device list, else 1.")
@click.option("--num-nodes", "num_nodes", type=click.IntRange(1), default=_g("num_nodes"),
              help="Nodes of a multi-node run (launched by srun or torchrun on every node).")
@click.option("-s", "--seed", type=int, default=_g("seed"), help="Seed for all random number generators.")
@click.option("-r", "--deterministic/--no-deterministic", default=_g("deterministic"),
              help="Use deterministic algorithms (seed 42 when no seed is given).")
@click.option("-v", "--verbose", count=True, help="More output; full tracebacks on failure.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, is_eager=True,
              help="YAML experiment file (global keys at the top, subcommand sections by name).")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, **values) -> None:
    """scriba's ketos: compile datasets, train, test, pretrain and convert text-line recognition models."""
    setup_logging(values["verbose"])
    if config_file is not None:
        values = apply_experiment_file(ctx, config_file, values)
        setup_logging(values["verbose"])
    ctx.obj = GlobalConfig(**values)


for _module in (compile_cmd, train_cmd, test_cmd, pretrain_cmd, convert_cmd, lm_cmd):
    cli.add_command(_module.command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the group and turns every expected failure into one line and an exit status."""
    args = sys.argv[1:] if argv is None else argv
    verbose = any(a in ("-v", "--verbose") or re.fullmatch(r"-v+", a) for a in args)
    try:
        cli.main(args=args, prog_name="ketos", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"error: {_one_line(e.format_message())}", err=True)
        sys.exit(2)
    except ScribaError as e:
        if verbose:
            traceback.print_exc()
        click.echo(f"error: {_one_line(str(e))}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line unless -v
        if verbose:
            traceback.print_exc()
        click.echo(f"error: {type(e).__name__}: {_one_line(str(e))} (run with -v for the traceback)", err=True)
        sys.exit(1)


def _one_line(message: str) -> str:
    return " ".join(message.split())


if __name__ == "__main__":
    main()
