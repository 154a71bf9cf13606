"""``ketos test``: evaluate a model on test data and print kraken's report (plus JSON/HTML on request)."""

from __future__ import annotations

import click

from scriba import config as C
from scriba.cli import options as O


@click.command("test")
@click.option("-m", "--model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Model to evaluate (checkpoint or weights file).")
@O.apply(*O.data_format_options(C.TestConfig, manifests=("test_data",)))
@O.apply(*O.text_options(C.TestConfig))
@click.option("--no-legacy-polygons", is_flag=True, default=False, help="Force disable the legacy polygon extractor.")
@click.option("--output-json", type=click.Path(dir_okay=False), default=None,
              help="Write the numbers and per-line results as JSON.")
@click.option("--output-html", type=click.Path(dir_okay=False), default=None,
              help="Write a self-contained HTML report with the worst lines.")
@click.option("--lm", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Decode with beam search and this label language model (ketos lm build) instead of greedily.")
@click.option("--lm-weight", type=O.FiniteFloatRange(0), default=C.default(C.TestConfig, "lm_weight"),
              help="Weight of the language model's log10 score against the network's.")
@click.option("--lm-bonus", type=O.FiniteFloatRange(), default=C.default(C.TestConfig, "lm_bonus"),
              help="Added to every non-blank label's log-posterior in each frame (offsets the language model's "
                   "preference for short lines).")
@click.option("--beam-size", type=click.IntRange(1), default=C.default(C.TestConfig, "beam_size"),
              help="Hypotheses kept per frame in the beam search.")
@O.ground_truth_argument("test_set")
@click.pass_obj
def command(g: C.GlobalConfig, test_set: tuple[str, ...], **opts) -> None:
    """Evaluate a recognition model on test data."""
    from scriba.jobs.evaluate.job import run_test, write_reports
    from scriba.jobs.evaluate.report import render_text

    opts["test_data"] = O.expand_inputs(opts["test_data"], test_set)
    cfg = C.build(C.TestConfig, opts)
    result = run_test(cfg, g)
    click.echo(render_text(result))
    write_reports(result, cfg)
    for what, path in (("JSON report", cfg.output_json), ("HTML report", cfg.output_html)):
        if path:
            click.echo(f"{what} written to {path}", err=True)
