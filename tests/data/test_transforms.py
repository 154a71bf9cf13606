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


# -- exactness of the pieces (reference values from scipy 1.x / torchvision, as kraken 7.1.1 uses them) --------

_A = [40, 30, 24, 12, 14, 1, 3, 0, 8, 39, 31, 43, 24, 29, 46, 35, 30, 26, 26, 44, 13, 39, 32, 0, 18, 41, 26, 1, 36,
      35, 40, 8, 4, 41, 1, 25, 3, 14, 23, 20]
# scipy.ndimage.gaussian_filter(np.array(_A), sigma) (integer output: truncated)
_SCIPY = {
    3.3: [23, 22, 20, 18, 16, 15, 15, 17, 19, 22, 25, 27, 29, 31, 31, 31, 31, 30, 29, 28, 27, 26, 25, 24, 24, 24, 24,
          24, 23, 23, 22, 21, 20, 19, 18, 17, 16, 16, 16, 16],
    # kernel radius 59 > length 40: repeated reflection
    14.7: [23] * 27 + [22] * 10 + [21] * 3,
}


@pytest.mark.parametrize("sigma", sorted(_SCIPY))
def test_centerline_smoothing_matches_scipy(sigma):
    from scriba.data.transforms import _gaussian_exact_1d

    out = np.trunc(_gaussian_exact_1d(np.array(_A, dtype=np.float64), sigma)).astype(np.int64)
    assert out.tolist() == _SCIPY[sigma]


@pytest.mark.parametrize("n,sigma,expected", [(50, 0.9, 23), (300, 9.3, 23), (700, 31.2, 22), (20, 30.0, 23)])
def test_flat_centerline_truncates_like_scipy(n, sigma, expected):
    # a flat line sums to just below or at 23 depending on the order of the sums; scipy's order decides
    from scriba.data.transforms import _gaussian_exact_1d

    out = np.trunc(_gaussian_exact_1d(np.full(n, 23.0), sigma)).astype(np.int64)
    assert set(out.tolist()) == {expected}


def _direct(a: np.ndarray, sigma: float, axis: int, mode: str) -> np.ndarray:
    """Textbook correlation with scipy's truncated Gaussian kernel, one output at a time."""
    from scriba.data.transforms import _gauss_kernel

    k = _gauss_kernel(sigma)
    r = len(k) // 2
    moved = np.moveaxis(a, axis, -1)
    n = moved.shape[-1]
    out = np.zeros_like(moved)
    for i in range(n):
        for t in range(-r, r + 1):
            j = i + t
            if mode == "reflect":
                while j < 0 or j >= n:
                    j = -j - 1 if j < 0 else 2 * n - j - 1
            elif j < 0 or j >= n:
                continue
            out[..., i] += k[t + r] * moved[..., j]
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("shape", [(12, 30), (6, 400)])
@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_gaussian_blur_matches_direct_sums(shape, mode):
    # (6, 400) takes the FFT path along axis 1 and the matrix product along axis 0
    from scriba.data.transforms import _gaussian

    a = np.random.default_rng(0).random(shape)
    for axis, sigma in ((0, shape[0] * 0.5), (1, shape[0] * 1.0)):
        np.testing.assert_allclose(_gaussian(a, sigma, axis, mode), _direct(a, sigma, axis, mode), rtol=1e-12,
                                   atol=1e-14)


def test_uniform_filter_window_sums():
    from scriba.data.transforms import _uniform

    a = np.random.default_rng(1).random((9, 13))
    for axis in (0, 1):
        for size in (2, 3, 4, a.shape[axis], a.shape[axis] + 2):
            moved = np.moveaxis(a, axis, -1)
            n = moved.shape[-1]
            ref = np.stack([moved[..., max(0, i - size // 2) : max(0, i + size - size // 2)].sum(-1) / size
                            for i in range(n)], -1)
            np.testing.assert_allclose(_uniform(a, size, axis), np.moveaxis(ref, -1, axis), rtol=1e-12)


def test_fast_fft_lengths():
    from scriba.data.transforms import _fast_len

    for n in (1, 2, 7, 97, 1000, 1574, 4097):
        m = _fast_len(n)
        assert m >= n and m <= 1 << (n - 1).bit_length()
        while m % 2 == 0:
            m //= 2
        while m % 3 == 0:
            m //= 3
        while m % 5 == 0:
            m //= 5
        assert m == 1


def test_tensor_values_are_kraken_float32():
    # torchvision's ToDtype(scale=True) multiplies by float32(1/255); x / 255 differs in the last bit for some x
    row = np.arange(256, dtype=np.uint8)[None, :].repeat(2, 0)
    t = LineTransform(0, 0, 1)(Image.fromarray(row, mode="L"))
    ref = torch.from_numpy(row).to(torch.float32).mul_(1.0 / 255)
    assert torch.equal(t, (ref.max() - ref)[None])
    rgb = LineTransform(0, 0, 3)(Image.fromarray(np.stack([row, row // 2, row // 3], -1), mode="RGB"))
    ref = torch.from_numpy(np.stack([row, row // 2, row // 3])).to(torch.float32).mul_(1.0 / 255)
    assert torch.equal(rgb, ref.max() - ref) and rgb.is_contiguous()
