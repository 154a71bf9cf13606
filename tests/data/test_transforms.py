"""Line image -> tensor, kraken's conventions (scaling, padding, inversion, centerline normalisation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from scriba.data.transforms import LineTransform, center_normalize, image_mode
from scriba.errors import InputError


def _line(w: int = 200, h: int = 40, slope: float = 0.1) -> Image.Image:
    im = Image.new("L", (w, h), 255)
    d = ImageDraw.Draw(im)
    for x in range(10, w - 10, 12):
        y = int(h / 2 + slope * (x - w / 2))
        d.rectangle([x, y - 6, x + 6, y + 6], fill=0)
    return im


def test_scale_pad_invert():
    t = LineTransform(20, 0, 1, padding=16)(_line())
    assert t.shape == (1, 20, 100 + 32)
    assert t.dtype == torch.float32
    assert float(t[:, :, :16].abs().max()) == 0.0 and float(t[:, :, -16:].abs().max()) == 0.0
    assert 0.9 < float(t.max()) <= 1.0


def test_rgb_and_fixed_sizes():
    im = _line().convert("RGB")
    assert LineTransform(20, 0, 3)(im).shape == (3, 20, 132)
    assert LineTransform(20, 50, 1)(im).shape == (1, 20, 50)
    assert LineTransform(0, 0, 1)(im).shape == (1, 40, 200)
    assert LineTransform(0, 100, 1, padding=4)(im).shape == (1, 20, 108)


def test_channel_height_mode():
    t = LineTransform(1, 0, 16, padding=0)(_line())
    assert t.shape == (16, 1, 80)


def test_invalid_spec():
    with pytest.raises(InputError):
        LineTransform(10, 0, 2)


def test_center_normalize_band():
    out = center_normalize(_line(400, 80, slope=0.1), 24)
    assert out.size[1] == 24 and out.mode == "L"
    ink = 255 - np.asarray(out, dtype=np.float64)
    assert ink.max() > 200
    # the band is cut around the centerline: ink stays away from the top and bottom rows
    assert ink[[0, -1]].mean() < ink[8:16].mean()


def test_blank_line_does_not_fail():
    t = LineTransform(24, 0, 1, center_normalize=True)(Image.new("L", (60, 30), 255))
    assert t.shape[1] == 24 and float(t.abs().max()) == 0.0


def test_from_model_input_uses_seg_type():
    assert LineTransform.from_model_input((1, 1, 48, 0), seg_type="bbox").center_normalize
    assert not LineTransform.from_model_input((1, 1, 48, 0), seg_type="baselines").center_normalize
    assert not LineTransform.from_model_input((1, 3, 48, 0), seg_type="bbox").center_normalize


def test_image_mode():
    assert image_mode(torch.tensor([[[0.0, 1.0]]])) == "1"
    assert image_mode(torch.tensor([[[0.0, 0.5, 1.0]]])) == "L"
    assert image_mode(torch.zeros(3, 2, 2)) == "RGB"
