"""``ketos compile``: pages and line images to a kraken-compatible Arrow dataset."""

from __future__ import annotations

import sys

import click

from scriba import config as C
from scriba.cli import options as O
from scriba.errors import UsageError


@click.command("compile")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=C.default(C.CompileConfig, "output"),
              help="Output dataset file.")
@click.option("-f", "--format-type", type=click.Choice(C.COMPILE_FORMAT_TYPES),
              default=C.default(C.CompileConfig, "format_type"),
              help="Input format: line images with .gt.txt (path) or ALTO/PageXML pages (xml, alto, page).")
@click.option("-F", "--files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="File(s) with paths to pages or line images.")
@click.option("--linetype", type=click.Choice(C.LINETYPES), default=None,
              help="Line geometry to extract from XML pages (default: baselines).")
@click.option("--force-type", type=click.Choice(["bbox", "baseline"]), default=None,
              help="Record this dataset type in the metadata regardless of the input.")
@click.option("--skip-empty-lines/--keep-empty-lines", default=C.default(C.CompileConfig, "skip_empty_lines"),
              help="Leave out lines without transcription.")
@click.option("--recordbatch-size", type=click.IntRange(1), default=C.default(C.CompileConfig, "recordbatch_size"),
              help="Lines per Arrow record batch.")
@click.option("--legacy-polygons", is_flag=True, default=C.default(C.CompileConfig, "legacy_polygons"),
              help="Use the legacy polygon extractor.")
@O.ground_truth_argument()
@click.pass_obj
def command(g: C.GlobalConfig, ground_truth: tuple[str, ...], files: tuple[str, ...], **opts) -> None:
    """Compile training data into a binary dataset (Arrow IPC, readable by kraken 7)."""
    from scriba.jobs.compile import compile_dataset

    opts["ground_truth"] = O.expand_inputs(files, ground_truth)
    if not opts["ground_truth"]:
        raise UsageError("no data to compile: pass pages or line images as arguments or with -F/--files")
    cfg = C.build(C.CompileConfig, opts)
    summary = compile_dataset(cfg, num_workers=g.num_workers, progress=sys.stderr.isatty() and not g.verbose)
    click.echo(str(summary))
