from __future__ import annotations

import pytest
import torch
from torch import nn

from scriba.jobs.pretrain.contrast import MaskModule, contrastive_forward, contrastive_logits, contrastive_loss


class _Conv(nn.Module):
    """A stand-in VGSL layer: a conv that folds the height away and halves the lengths."""

    def __init__(self, h: int, c: int):
        super().__init__()
        self.co = nn.Conv2d(1, c, (h, 2), stride=(1, 2))

    def forward(self, x: torch.Tensor, seq_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.relu(self.co(x)), seq_lens // 2


class _BiLSTM(nn.Module):
    def __init__(self, c: int, h: int):
        super().__init__()
        self.layer = nn.LSTM(c, h, bidirectional=True, batch_first=True)

    def forward(self, x: torch.Tensor, seq_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, _ = self.layer(x.squeeze(2).transpose(1, 2))
        return y.transpose(1, 2).unsqueeze(2), seq_lens


def test_logits_shape_follows_num_negatives() -> None:
    torch.manual_seed(0)
    for k in (1, 5, 20):
        feats, enc = [_Conv(8, 6)], [_BiLSTM(6, 5)]
        mask = MaskModule(6, 10, mask_width=2, mask_prob=0.5, num_negatives=k)
        x = torch.rand(3, 1, 8, 80)
        out = contrastive_forward(feats, enc, mask, x, torch.tensor([80, 60, 30]), 0.1)
        assert out.logits.shape[1] == 1 + k
        assert out.logits.shape[0] == out.valid.shape[0]
        assert out.loss is not None and out.loss.ndim == 0


def test_logit_temp_scales_logits() -> None:
    g = torch.Generator().manual_seed(0)
    ctx, tgt = torch.randn(12, 8, generator=g), torch.randn(12, 8, generator=g)
    neg = torch.randint(0, 12, (12, 4), generator=g)
    neg = torch.where(neg == torch.arange(12)[:, None], (neg + 1) % 12, neg)
    a = contrastive_logits(ctx, tgt, neg, 0.1)
    b = contrastive_logits(ctx, tgt, neg, 0.05)
    assert torch.allclose(b, 2 * a)
    assert a.abs().max() <= 10 + 1e-4  # cosine in [-1, 1] / 0.1
    with pytest.raises(ValueError):
        contrastive_logits(ctx, tgt, neg, 0.0)


def test_positive_is_column_zero() -> None:
    tgt = torch.eye(4)
    neg = torch.tensor([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
    logits = contrastive_logits(tgt.clone(), tgt, neg, 1.0)
    assert torch.allclose(logits[:, 0], torch.ones(4))
    assert torch.allclose(logits[:, 1:], torch.zeros(4, 3))
    loss = contrastive_loss(logits / 0.01, torch.ones(4, dtype=torch.bool))
    assert loss is not None and loss.item() < 1e-6


def test_negative_equal_to_positive_is_ignored() -> None:
    tgt = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    logits = contrastive_logits(tgt.clone(), tgt, torch.tensor([[1, 2], [0, 2], [0, 1]]), 1.0)
    assert logits[0, 1] == float("-inf") and logits[1, 1] == float("-inf")
    assert torch.isfinite(logits[2]).all()


def test_loss_is_none_without_valid_frames() -> None:
    assert contrastive_loss(torch.zeros(3, 2), torch.zeros(3, dtype=torch.bool)) is None


def test_mask_module_replaces_masked_frames_only() -> None:
    mod = MaskModule(4, 3, mask_width=2, mask_prob=0.5, num_negatives=2)
    x = torch.randn(2, 4, 1, 30)
    out = mod(x, torch.tensor([30, 11]), torch.Generator().manual_seed(0))
    frames = out.x.squeeze(2).transpose(1, 2)
    orig = x.squeeze(2).transpose(1, 2)
    assert torch.equal(frames[~out.mask], orig[~out.mask])
    assert torch.allclose(frames[out.mask], mod.mask_emb.expand(int(out.mask.sum()), 4))
    assert not out.mask[1, 11:].any()
    assert out.targets.shape == (int(out.mask.sum()), 3)
    assert torch.allclose(out.targets, mod.project_q(orig[out.mask]))


def test_mask_module_needs_height_one() -> None:
    mod = MaskModule(4, 3, 2, 0.5, 2)
    with pytest.raises(ValueError, match="height 1"):
        mod(torch.randn(1, 4, 2, 10), torch.tensor([10]))


def test_gradients_reach_every_part() -> None:
    torch.manual_seed(0)
    feats, enc = [_Conv(8, 6)], [_BiLSTM(6, 5)]
    mask = MaskModule(6, 10, 2, 0.5, 5)
    out = contrastive_forward(feats, enc, mask, torch.rand(2, 1, 8, 60), torch.tensor([60, 40]), 0.1)
    assert out.loss is not None
    out.loss.backward()
    for p in [*feats[0].parameters(), *enc[0].parameters(), *mask.parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_logits_match_a_direct_computation_over_several_lines() -> None:
    from scriba.jobs.pretrain.masking import compute_mask, sample_negatives

    g = torch.Generator().manual_seed(4)
    mask = compute_mask(torch.tensor([40, 25, 3, 0, 31]), 40, 2, 0.5, g)
    neg_idx, valid = sample_negatives(mask, 6, g)
    m = int(mask.sum())
    ctx, tgt = torch.randn(m, 5, generator=g), torch.randn(m, 5, generator=g)
    got = contrastive_logits(ctx, tgt, neg_idx, 0.1, mask.sum(1))
    cand = torch.cat([tgt[:, None], tgt[neg_idx]], dim=1)
    want = torch.nn.functional.cosine_similarity(ctx[:, None], cand, dim=-1) / 0.1
    assert got.shape == (m, 7)
    assert torch.allclose(got[valid], want[valid], atol=1e-5)


def test_logits_backpropagate_to_context_and_targets() -> None:
    ctx = torch.randn(6, 4, requires_grad=True)
    tgt = torch.randn(6, 4, requires_grad=True)
    neg = torch.tensor([[1, 2], [0, 2], [1, 0], [4, 5], [3, 5], [3, 4]])
    loss = contrastive_loss(
        contrastive_logits(ctx, tgt, neg, 0.1, torch.tensor([3, 3])), torch.ones(6, dtype=torch.bool)
    )
    assert loss is not None
    loss.backward()
    assert ctx.grad is not None and tgt.grad is not None
    assert ctx.grad.abs().sum() > 0 and tgt.grad.abs().sum() > 0
