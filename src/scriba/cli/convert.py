"""``ketos convert``: checkpoints and weights files to a weights file."""

from __future__ import annotations

import click

from scriba import config as C
from scriba.errors import UsageError


@click.command("convert")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=C.default(C.ConvertConfig, "output"),
              help="Output weights file.")
@click.option("--weights-format", type=click.Choice(C.WEIGHTS_FORMATS),
              default=C.default(C.ConvertConfig, "weights_format"), help="Output weights format.")
@click.argument("checkpoints", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.pass_obj
def command(g: C.GlobalConfig, checkpoints: tuple[str, ...], output: str, weights_format: str) -> None:
    """Convert checkpoints or weights (safetensors, CoreML) into one weights file."""
    from scriba.weights.convert import convert

    if not checkpoints:
        raise UsageError("no checkpoints to convert were given")
    written = convert(list(checkpoints), output, weights_format)
    click.echo(f"wrote {written}")
