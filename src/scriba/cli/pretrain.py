"""``ketos pretrain``: masked contrastive pretraining of a recognition network on unlabelled lines."""

from __future__ import annotations

import click

from scriba import config as C
from scriba.cli import options as O


@click.command("pretrain")
@O.apply(*O.data_format_options(C.PretrainConfig, manifests=("training_data", "evaluation_data")))
@O.apply(*O.optim_options(
    C.PretrainConfig, warmup_type=float,
    min_delta_help="Minimum improvement to reset early stopping, as a fraction of the best validation loss "
                   "(the delta scales with the best loss)."))
@click.option("-mw", "--mask-width", type=click.IntRange(1), default=C.default(C.PretrainConfig, "mask_width"),
              help="Width of sampled masks at the scale of the subsampled tensor, e.g. 4x subsampling with mask "
                   "width 3 masks 12 pixels.")
@click.option("-mp", "--mask-probability", "mask_prob", type=O.FiniteFloatRange(0, 1),
              default=C.default(C.PretrainConfig, "mask_prob"),
              help="Probability of a position being the start of a mask; spans do not overlap, so this is "
                   "also the expected share of each line that is masked.")
@click.option("-nn", "--num-negatives", type=click.IntRange(1), default=C.default(C.PretrainConfig, "num_negatives"),
              help="Number of negative samples for the contrastive loss.")
@click.option("-lt", "--logit-temp", type=O.FiniteFloatRange(0, min_open=True),
              default=C.default(C.PretrainConfig, "logit_temp"),
              help="Temperature that divides the logits of the contrastive loss.")
@O.ground_truth_argument()
@click.pass_obj
def command(g: C.GlobalConfig, ground_truth: tuple[str, ...], **opts) -> None:
    """Pretrain a recognition network without transcriptions (wav2vec2-style masked prediction)."""
    from scriba.jobs.pretrain.job import pretrain

    if opts["resume"] and not opts["load"]:
        O.warn_ignored_with_resume()
        cfg = C.PretrainConfig(resume=opts["resume"])
    else:
        opts["training_data"] = O.expand_inputs(opts["training_data"], ground_truth)
        opts["evaluation_data"] = O.expand_inputs(opts["evaluation_data"], ())
        cfg = C.build(C.PretrainConfig, opts)
    O.report_run(pretrain(cfg, g))
