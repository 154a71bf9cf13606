"""The contrastive task: mask the convolutional features, encode them, find the true frame among negatives.

Three pieces take part: the network's convolutional front (``features``), its recurrent encoder, and a
:class:`MaskModule` (a learned mask embedding plus the projection that turns the unmasked features into
targets). Only ``features`` and ``encoder`` go into the weights written at the end; the mask module exists
for pretraining alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from scriba.jobs.pretrain.masking import compute_mask, sample_negatives

Layer = nn.Module  # a VGSL layer: ``layer(x, seq_lens) -> (x, seq_lens)``


def run_layers(layers: Sequence[Layer], x: torch.Tensor, seq_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for layer in layers:
        x, seq_lens = layer(x, seq_lens)
    return x, seq_lens


@dataclass
class Masked:
    """A masked batch. ``x`` is (N, C, 1, W) with masked frames replaced; ``targets`` (M, D) are the
    projected clean features of the M masked frames in row-major order of ``mask`` (N, W)."""

    x: torch.Tensor
    seq_lens: torch.Tensor
    mask: torch.Tensor
    targets: torch.Tensor
    neg_idx: torch.Tensor
    valid: torch.Tensor

    @property
    def counts(self) -> torch.Tensor:
        """Masked frames per line."""
        return self.mask.sum(dim=1)


class MaskModule(nn.Module):
    """Learned mask embedding and target projection (wav2vec2's masking without quantisation)."""

    def __init__(self, in_dim: int, final_dim: int, mask_width: int, mask_prob: float, num_negatives: int):
        super().__init__()
        self.mask_width = mask_width
        self.mask_prob = mask_prob
        self.num_negatives = num_negatives
        # uniform [0, 1) like the features after a ReLU: a mask that stands out but is not out of range
        self.mask_emb = nn.Parameter(torch.rand(in_dim))
        self.project_q = nn.Linear(in_dim, final_dim)

    def forward(self, x: torch.Tensor, seq_lens: torch.Tensor, generator: torch.Generator | None = None) -> Masked:
        if x.shape[2] != 1:
            raise ValueError(
                f"pretraining needs the features before the first recurrent layer to have height 1, "
                f"got {tuple(x.shape)}; add a reshape such as S1(1x0)1,3 before it"
            )
        n, _, _, w = x.shape
        mask = compute_mask(seq_lens, w, self.mask_width, self.mask_prob, generator).to(x.device)
        frames = x.squeeze(2).transpose(1, 2)  # (N, W, C)
        targets = self.project_q(frames[mask])
        neg_idx, valid = sample_negatives(mask, self.num_negatives, generator)
        masked = torch.where(mask[:, :, None], self.mask_emb.to(frames.dtype), frames)
        return Masked(
            x=masked.transpose(1, 2).unsqueeze(2),
            seq_lens=seq_lens,
            mask=mask,
            targets=targets,
            neg_idx=neg_idx.to(x.device),
            valid=valid.to(x.device),
        )


def contrastive_logits(
    context: torch.Tensor,
    targets: torch.Tensor,
    neg_idx: torch.Tensor,
    logit_temp: float,
    counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cosine similarity of each context vector with its target (column 0) and its negatives, / temp.

    ``counts`` (N,) is the number of masked frames of each line (``context`` rows are grouped by line, in
    order; None means one group). Negatives only ever come from the same line, so the similarities are
    computed line by line as one batched matrix product, (N, T, T) for T masked frames per line, instead of
    gathering ``M x K`` negative vectors of full width (gigabytes at wav2vec2's 100 negatives).

    A negative that equals its positive exactly (e.g. two blank frames) is not a distractor but the same
    answer; its logit is set to -inf so the loss does not punish the model for being right.
    """
    if logit_temp <= 0:
        raise ValueError(f"the logit temperature must be positive, not {logit_temp}")
    m, d = targets.shape
    dev = targets.device
    counts = torch.tensor([m], device=dev) if counts is None else counts.to(dev)
    n, t = len(counts), int(counts.max()) if len(counts) else 0
    line = torch.repeat_interleave(torch.arange(n, device=dev), counts)
    offsets = torch.cumsum(counts, 0) - counts
    own = torch.arange(m, device=dev) - offsets[line]
    ctx = context.new_zeros((n, t, d), dtype=torch.float32)
    tgt = targets.new_zeros((n, t, d), dtype=torch.float32)
    ctx = ctx.index_put((line, own), F.normalize(context.float(), dim=-1, eps=1e-8))
    tgt = tgt.index_put((line, own), F.normalize(targets.float(), dim=-1, eps=1e-8))
    sim = torch.bmm(ctx, tgt.transpose(1, 2))[line, own]  # (M, T): row j against every frame of its line
    local = neg_idx.to(dev) - offsets[line][:, None]
    logits = sim.gather(1, torch.cat([own[:, None], local], dim=1)) / logit_temp
    if m:
        ids = torch.unique(targets.detach().float(), dim=0, return_inverse=True)[1]
        same = ids[neg_idx] == ids[:, None]
        if same.any():
            logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(same, float("-inf"))], dim=1)
    return logits


def contrastive_loss(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor | None:
    """Mean cross-entropy with the positive at index 0 over the frames that had negatives (None if none)."""
    logits = logits[valid]
    if logits.shape[0] == 0:
        return None
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


@dataclass
class ContrastiveOutput:
    logits: torch.Tensor  # (M, 1 + num_negatives)
    valid: torch.Tensor  # (M,)
    loss: torch.Tensor | None


def contrastive_forward(
    features: Sequence[Layer],
    encoder: Sequence[Layer],
    mask: MaskModule,
    x: torch.Tensor,
    seq_lens: torch.Tensor,
    logit_temp: float,
    generator: torch.Generator | None = None,
) -> ContrastiveOutput:
    """One batch of the task: features -> mask -> encoder -> logits and loss.

    A function over the layers rather than a module that owns them, so that the layers stay registered in
    the recognition network alone (checkpoints keep them once, under ``net.``).
    """
    feats, lens = run_layers(features, x, seq_lens)
    masked = mask(feats, lens, generator)
    ctx, _ = run_layers(encoder, masked.x, masked.seq_lens)
    if ctx.shape[2] != 1 or ctx.shape[3] != feats.shape[3]:
        raise ValueError(
            f"the recurrent encoder must keep height 1 and the width of its input, got {tuple(ctx.shape)} "
            f"from {tuple(feats.shape)}"
        )
    context = ctx.squeeze(2).transpose(1, 2)[masked.mask]
    logits = contrastive_logits(context, masked.targets, masked.neg_idx, logit_temp, masked.counts)
    return ContrastiveOutput(logits, masked.valid, contrastive_loss(logits, masked.valid))
