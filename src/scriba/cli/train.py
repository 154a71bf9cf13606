"""``ketos train``: options to a :class:`~scriba.config.TrainConfig`, then :func:`scriba.jobs.train.job.train`."""

from __future__ import annotations

import click

from scriba import config as C
from scriba.cli import options as O


@click.command("train")
@O.apply(*O.data_format_options(C.TrainConfig, manifests=("training_data", "evaluation_data")))
@O.apply(*O.optim_options(C.TrainConfig))
@O.apply(*O.text_options(C.TrainConfig))
@click.option("--freeze-backbone", type=click.IntRange(0), default=C.default(C.TrainConfig, "freeze_backbone"),
              help="Number of training samples to keep the backbone (everything but the output layer) frozen.")
@click.option("-c", "--codec", type=click.UNPROCESSED, default=None,
              help="Codec JSON file (or a mapping in the experiment file); invalid with --load.")
@click.option("--resize", type=click.Choice(C.RESIZE_MODES), default=C.default(C.TrainConfig, "resize"),
              help="Codec/output layer resizing when loading a model: `union` adds code points, `new` matches the "
                   "training data exactly, `fail` aborts on a mismatch (`add`/`both`: deprecated aliases).")
@click.option("--ema", type=O.FiniteFloatRange(0, 1, max_open=True), default=C.default(C.TrainConfig, "ema"),
              help="Decay per optimizer step of an exponential moving average of the weights, which validation "
                   "and the saved model use (0: off, kraken's behaviour).")
@click.option("--aux-ctc", type=O.FiniteFloatRange(0), default=C.default(C.TrainConfig, "aux_ctc"),
              help="Weight of a train-only CTC loss from a head on the convolutional features (0: off; e.g. 0.1). "
                   "The saved model does not contain the head.")
@O.ground_truth_argument()
@click.pass_obj
def command(g: C.GlobalConfig, ground_truth: tuple[str, ...], **opts) -> None:
    """Train a recognition model (from scratch, fine-tune with --load, or continue with --resume)."""
    from scriba.jobs.train.job import train

    if opts["resume"] and not opts["load"]:
        O.warn_ignored_with_resume()
        cfg = C.TrainConfig(resume=opts["resume"])
    else:
        # -t/-e name manifests; the library checks the values (--load with --resume, --resize, the codec file, ...)
        opts["training_data"] = O.expand_inputs(opts["training_data"], ground_truth)
        opts["evaluation_data"] = O.expand_inputs(opts["evaluation_data"], ())
        cfg = C.build(C.TrainConfig, opts)
    O.report_run(train(cfg, g))
