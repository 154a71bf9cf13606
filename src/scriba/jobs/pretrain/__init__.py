"""``ketos pretrain``: wav2vec2-style masked contrastive pretraining of a recognition network's front and encoder."""

from scriba.jobs.pretrain.job import PretrainResult, pretrain

__all__ = ["PretrainResult", "pretrain"]
