"""``ketos lm``: character language models for beam-search decoding (``ketos test --lm``)."""

from __future__ import annotations

import click

from scriba import config as C
from scriba.cli import options as O


@click.group("lm")
def command() -> None:
    """Character n-gram language models in a recognition model's labels."""


@command.command("build")
@click.option("-m", "--model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Recognition model whose codec (label space) the language model uses.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=C.default(C.LMBuildConfig, "output"),
              help="ARPA file to write.")
@click.option("--order", type=click.IntRange(1, 12), default=C.default(C.LMBuildConfig, "order"),
              help="n-gram order (characters of context plus one).")
@click.option("-t", "--training-data", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="File(s) with paths to transcribed training data.")
@click.option("-f", "--format-type", type=click.Choice(C.FORMAT_TYPES),
              default=C.default(C.LMBuildConfig, "format_type"),
              help="Data format: line images with .gt.txt (path), ALTO/PageXML pages (xml, alto, page) "
                   "or compiled .arrow datasets (binary).")
@click.option("--linetype", type=click.Choice(C.LINETYPES), default=None,
              help="Line geometry of XML pages (only their transcriptions are read).")
@O.apply(*O.text_options(C.LMBuildConfig))
@O.ground_truth_argument()
def build(ground_truth: tuple[str, ...], training_data: tuple[str, ...], **opts) -> None:
    """Build a character n-gram model of transcriptions, with the text transforms used for training."""
    from scriba.jobs.lm import build_language_model

    opts["training_data"] = O.expand_inputs(training_data, ground_truth)
    click.echo(str(build_language_model(C.build(C.LMBuildConfig, opts))))
