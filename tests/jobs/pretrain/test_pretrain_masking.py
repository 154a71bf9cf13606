from __future__ import annotations

import pytest
import torch

from scriba.jobs.pretrain.masking import compute_mask, sample_negatives


def _spans(row: torch.Tensor) -> list[tuple[int, int]]:
    """(start, length) of each run of True in a 1-d bool tensor."""
    out: list[tuple[int, int]] = []
    start = None
    for i, v in enumerate(row.tolist() + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i - start))
            start = None
    return out


def test_mask_never_touches_padding() -> None:
    g = torch.Generator().manual_seed(0)
    lens = torch.tensor([100, 37, 12, 3, 1, 0])
    for _ in range(50):
        mask = compute_mask(lens, 120, 4, 0.9, g)
        assert mask.shape == (6, 120)
        for i, length in enumerate(lens.tolist()):
            assert not mask[i, length:].any()
        assert not mask[4].any() and not mask[5].any()  # nothing to mask / no context left


def test_mask_spans_have_the_mask_width() -> None:
    g = torch.Generator().manual_seed(1)
    for width in (1, 3, 4, 7):
        mask = compute_mask(torch.tensor([200] * 8), 200, width, 0.5, g)
        for row in mask:
            # spans do not overlap, so merged runs are whole multiples of the width
            for _, run in _spans(row):
                assert run % width == 0
        assert int(mask.sum()) % width == 0


def test_mask_width_changes_the_mask() -> None:
    narrow = compute_mask(torch.tensor([300]), 300, 1, 0.3, torch.Generator().manual_seed(3))
    wide = compute_mask(torch.tensor([300]), 300, 10, 0.3, torch.Generator().manual_seed(3))
    assert not torch.equal(narrow, wide)
    # same coverage, far fewer and longer runs
    assert len(_spans(wide[0])) < len(_spans(narrow[0]))


@pytest.mark.parametrize("prob", [0.1, 0.3, 0.5, 0.8])
def test_mask_probability_sets_the_masked_fraction(prob: float) -> None:
    g = torch.Generator().manual_seed(2)
    lens = torch.full((64,), 400)
    frac = compute_mask(lens, 400, 4, prob, g).float().mean().item()
    assert frac == pytest.approx(prob, abs=0.02)


def test_mask_probability_zero_and_one() -> None:
    lens = torch.tensor([40, 10])
    assert not compute_mask(lens, 40, 4, 0.0).any()
    full = compute_mask(lens, 40, 4, 1.0, torch.Generator().manual_seed(0))
    assert full[0].all() and full[1].sum() == 8


def test_short_lines_keep_context() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        mask = compute_mask(torch.tensor([4, 3, 2]), 4, 4, 1.0, g)
        assert mask.sum(1).tolist() == [3, 2, 1]


def test_mask_rejects_bad_options() -> None:
    with pytest.raises(ValueError):
        compute_mask(torch.tensor([10]), 10, 0, 0.5)
    with pytest.raises(ValueError):
        compute_mask(torch.tensor([10]), 10, 2, 1.5)


def test_negatives_come_from_other_masked_frames_of_the_same_line() -> None:
    g = torch.Generator().manual_seed(0)
    mask = compute_mask(torch.tensor([80, 50, 20, 9]), 80, 3, 0.5, g)
    neg_idx, valid = sample_negatives(mask, 25, g)
    counts = mask.sum(1)
    line = torch.repeat_interleave(torch.arange(4), counts)
    m = int(counts.sum())
    assert neg_idx.shape == (m, 25)
    assert valid.all()
    own = torch.arange(m)[:, None]
    assert not (neg_idx == own).any()
    assert (line[neg_idx] == line[:, None]).all()
    assert (neg_idx >= 0).all() and (neg_idx < m).all()


def test_negatives_cover_all_others_uniformly() -> None:
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[0, 2:7] = True  # five masked frames
    neg_idx, _ = sample_negatives(mask, 4000, torch.Generator().manual_seed(0))
    for j in range(5):
        hist = torch.bincount(neg_idx[j], minlength=5).float() / 4000
        assert hist[j] == 0
        others = torch.cat([hist[:j], hist[j + 1 :]])
        assert torch.allclose(others, torch.full((4,), 0.25), atol=0.03)


def test_lines_without_possible_negatives_are_invalid() -> None:
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[0, 1] = True  # a single masked frame: no negative possible
    mask[2, 0:3] = True
    neg_idx, valid = sample_negatives(mask, 5)
    assert valid.tolist() == [False, True, True, True]
    assert (neg_idx[0] == 0).all()
    assert not (neg_idx[1:] == torch.arange(1, 4)[:, None]).any()


def test_num_negatives_must_be_positive() -> None:
    with pytest.raises(ValueError):
        sample_negatives(torch.ones(1, 4, dtype=torch.bool), 0)
