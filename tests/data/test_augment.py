"""Training degradations: shape and range kept, reproducible per seed, each one visible."""

from __future__ import annotations

import pytest
import torch

from scriba.data import augment as A


@pytest.fixture
def line():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 48, 400)
    # strokes: vertical bars of "ink" (high values in the inverted convention)
    for i in range(20, 380, 12):
        x[:, 10:38, i : i + 3] = 0.9 + 0.1 * torch.rand(1, 28, 3, generator=g)
    return x


def _g(seed):
    return torch.Generator().manual_seed(seed)


def test_shape_and_range_kept(line):
    aug = A.Augmenter(p=1.0)
    for seed in range(20):
        y = aug(line, _g(seed))
        assert y.shape == line.shape and y.dtype == line.dtype
        assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_reproducible_per_seed(line):
    aug = A.Augmenter(p=1.0)
    assert torch.equal(aug(line, _g(3)), aug(line, _g(3)))
    assert not torch.equal(aug(line, _g(3)), aug(line, _g(4)))


def test_probability(line):
    assert torch.equal(A.Augmenter(p=0.0)(line, _g(1)), line)
    changed = sum(not torch.equal(A.Augmenter(p=0.5)(line, _g(s)), line) for s in range(40))
    assert 8 < changed < 32


@pytest.mark.parametrize("fn", [A._affine, A._wavy, A._stroke_width, A._blur, A._fade, A._stain, A._noise])
def test_each_degradation_changes_the_line(line, fn):
    x = line.unsqueeze(0)
    y = fn(x.clone(), _g(2))
    assert y.shape == x.shape
    assert not torch.allclose(y, x)


def test_stroke_width_changes_ink_amount(line):
    x = line.unsqueeze(0)
    amounts = {float(A._stroke_width(x, _g(s)).sum()) for s in range(10)}
    assert min(amounts) < float(x.sum()) < max(amounts)


def test_colour_lines():
    x = torch.rand(3, 32, 100)
    y = A.Augmenter(p=1.0)(x, _g(0))
    assert y.shape == (3, 32, 100)
