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


@command.command("tune")
@click.option("-m", "--model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Recognition model the language model was built for.")
@click.option("--lm", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Label language model to tune (ketos lm build).")
@O.apply(*O.data_format_options(C.LMTuneConfig, manifests=()))
@click.option("-e", "--evaluation-data", "test_data", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="File(s) with paths to validation data (not the test split).")
@O.apply(*O.text_options(C.LMTuneConfig))
@click.option("--lm-weights", type=O.FloatList(), default=",".join(map(str, C.default(C.LMTuneConfig, "lm_weights"))),
              help="Language model weights to try, comma-separated.")
@click.option("--lm-bonuses", type=O.FloatList(), default=",".join(map(str, C.default(C.LMTuneConfig, "lm_bonuses"))),
              help="Label bonuses to try, comma-separated.")
@click.option("--beam-size", type=click.IntRange(1), default=C.default(C.LMTuneConfig, "beam_size"),
              help="Hypotheses kept per frame in the beam search.")
@click.option("--no-legacy-polygons", is_flag=True, default=False, help="Force disable the legacy polygon extractor.")
@click.option("--output-json", type=click.Path(dir_okay=False), default=None, help="Write the whole grid as JSON.")
@O.ground_truth_argument("validation_set")
@click.pass_obj
def tune(g: C.GlobalConfig, validation_set: tuple[str, ...], **opts) -> None:
    """Choose --lm-weight and --lm-bonus on validation lines: the grid's points, fewest errors first.

    The network reads the lines once; each point decodes them again in --threads worker processes.
    """
    from scriba.jobs.evaluate.lm_tune import tune_language_model

    opts["test_data"] = O.expand_inputs(opts["test_data"], validation_set)
    cfg = C.build(C.LMTuneConfig, opts)
    result = tune_language_model(cfg, g)
    click.echo(result.render())
    if cfg.output_json:
        click.echo(f"JSON report written to {cfg.output_json}", err=True)
