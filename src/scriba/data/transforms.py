"""Line image -> network input tensor, preprocessed exactly as kraken does.

Order: grey (or RGB for 3-channel specs), scale to the spec height with Lanczos keeping the aspect ratio (or,
for bbox/path lines and 1-channel specs, centerline normalisation), white padding left and right, to float in
[0, 1], inverted with ``max - x`` so that ink is high and background and padding are ~0.

The centerline normaliser reproduces ocropy's ``CenterNormalizer`` (as used by kraken) with numpy and torch:
the smoothing filters, the integer rounding and the bilinear resampling follow scipy.ndimage's conventions
(constant/reflect borders, ``int(4 * sigma + 0.5)`` kernel radius, truncation on integer outputs), because a
model trained on its output is sensitive to the exact line placement.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from scriba.errors import InputError

_LANCZOS = Image.Resampling.LANCZOS


def _gauss_kernel(sigma: float) -> np.ndarray:
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    # same operation order as scipy, so that the kernel matches it bit for bit
    k = np.exp(-0.5 / (sigma * sigma) * x**2)
    return k / k.sum()


def _gaussian_exact_1d(a: np.ndarray, sigma: float) -> np.ndarray:
    """1-D Gaussian with 'reflect' borders summed in scipy's order (centre, then pairs from the outside in).

    Its result is truncated to integers afterwards, so values that should be exact (a flat centerline)
    must come out exactly as scipy computes them; an FFT would land just below and truncate one lower.
    """
    k = _gauss_kernel(sigma)
    r = len(k) // 2
    n = len(a)
    padded = np.pad(a.astype(np.float64), (r, r), mode="symmetric")
    out = padded[r : r + n] * k[r]
    for j in range(r, 0, -1):
        out = out + (padded[r - j : r - j + n] + padded[r + j : r + j + n]) * k[r - j]
    return out


def _correlate_rows(a: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """Correlates every row of 2-D ``a`` with a symmetric odd ``kernel`` (scipy 'constant'=0 / 'reflect').

    Kernels reach several line heights, so the correlation runs as an FFT product (float64).
    """
    r = len(kernel) // 2
    n = a.shape[1]
    if mode == "constant":
        padded = np.pad(a, ((0, 0), (r, r)))
    else:
        padded = np.pad(a, ((0, 0), (r, r)), mode="symmetric")
    size = padded.shape[1] + len(kernel) - 1
    nfft = 1 << (size - 1).bit_length()
    spec = np.fft.rfft(padded, nfft, axis=1) * np.fft.rfft(kernel, nfft)[None, :]
    full = np.fft.irfft(spec, nfft, axis=1)
    return full[:, 2 * r : 2 * r + n]


def _gaussian(a: np.ndarray, sigma: float, axis: int, mode: str = "constant") -> np.ndarray:
    if sigma <= 1e-15:
        return a
    k = _gauss_kernel(sigma)
    if axis == 0:
        return _correlate_rows(a.T, k, mode).T
    return _correlate_rows(a, k, mode)


def _uniform(a: np.ndarray, size: int, axis: int) -> np.ndarray:
    """scipy ``uniform_filter1d`` with zero borders: window ``[i - size//2, i + size - size//2 - 1]``."""
    if size <= 1:
        return a
    before = size // 2
    after = size - before - 1
    moved = np.moveaxis(a, axis, -1)
    padded = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(before + 1, after)])
    c = np.cumsum(padded, axis=-1)
    out = (c[..., size:] - c[..., :-size]) / size
    return np.moveaxis(out, -1, axis)


def _bilinear_constant(img: np.ndarray, scale: float, out_h: int, out_w: int, cval: float) -> np.ndarray:
    """``affine_transform(img, 1/scale, order=1, mode='constant')``: samples beyond the edges get ``cval``."""
    h, w = img.shape
    ys = np.arange(out_h, dtype=np.float64) / scale
    xs = np.arange(out_w, dtype=np.float64) / scale
    y0 = np.floor(ys).astype(np.int64)
    x0 = np.floor(xs).astype(np.int64)
    fy = ys - y0
    fx = xs - x0
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    y0c = np.minimum(y0, h - 1)
    x0c = np.minimum(x0, w - 1)
    top = img[y0c][:, x0c] * (1 - fx) + img[y0c][:, x1] * fx
    bot = img[y1][:, x0c] * (1 - fx) + img[y1][:, x1] * fx
    out = top * (1 - fy)[:, None] + bot * fy[:, None]
    eps = 1e-9
    oob = (ys > h - 1 + eps)[:, None] | (xs > w - 1 + eps)[None, :]
    out[oob] = cval
    return out


class CenterNormalizer:
    """ocropy's centerline normaliser: finds a smoothed centerline, cuts a band around it and scales it."""

    def __init__(self, target_height: int = 48, params: tuple[float, float, float] = (4, 1.0, 0.3)) -> None:
        self.target_height = target_height
        self.range, self.smoothness, self.extra = params

    def measure(self, line: np.ndarray) -> None:
        h, w = line.shape
        smoothed = _gaussian(line, h * 0.5, axis=0)
        smoothed = _gaussian(smoothed, h * self.smoothness, axis=1)
        box = smoothed
        if h * 0.5 > 1:
            box = _uniform(box, int(h * 0.5), axis=0)
        if w > 1:
            box = _uniform(box, int(w), axis=1)
        smoothed = smoothed + 0.001 * box
        a = np.argmax(smoothed, axis=0).astype(np.float64)
        a = _gaussian_exact_1d(a, h * self.extra) if h * self.extra > 1e-15 else a
        # scipy writes a float result into the integer input's dtype by truncation
        self.center = np.trunc(a).astype(np.int64)
        deltas = np.abs(np.arange(h)[:, None] - self.center[None, :])
        ink = deltas[line != 0]
        self.mad = float(ink.mean()) if ink.size else h / 4.0
        self.r = int(1 + self.range * self.mad)
        self.shape = (h, w)

    def dewarp(self, img: np.ndarray, cval: float) -> np.ndarray:
        h, w = img.shape
        r = self.r
        padded = np.vstack([np.full((r, w), cval, dtype=np.float64), img.astype(np.float64), np.full((r, w), cval)])
        rows = self.center[None, :] + np.arange(2 * r)[:, None]
        return padded[rows, np.arange(w)[None, :]].astype(np.float32)

    def normalize(self, img: np.ndarray, cval: float) -> np.ndarray:
        dewarped = self.dewarp(img, cval).astype(np.float64)
        h, w = dewarped.shape
        scale = self.target_height / h
        out_w = int(scale * w)
        return _bilinear_constant(dewarped, scale, self.target_height, out_w, cval).astype(np.float32)


def center_normalize(im: Image.Image, height: int) -> Image.Image:
    """Dewarps a greyscale line image to ``height`` along its centerline (kraken's ``dewarp``)."""
    line = np.asarray(im.convert("L") if im.mode != "L" else im)
    top = int(line.max())
    temp = (top - line.astype(np.int64)).astype(np.float64)
    tmax = temp.max()
    if tmax == 0:
        # a blank line has no centerline; plain scaling gives the same blank result
        return _fixed_resize(im, height, 0)
    temp /= tmax
    norm = CenterNormalizer(height)
    norm.measure(temp)
    out = norm.normalize(line, cval=float(top))
    # PIL's F -> L conversion truncates and clips, as kraken's mode conversion does
    return Image.fromarray(np.clip(np.trunc(out), 0, 255).astype(np.uint8), mode="L")


def _fixed_resize(im: Image.Image, height: int, width: int, resample: int = _LANCZOS) -> Image.Image:
    w, h = im.size
    if height == 0:
        height = max(1, int(h * width / w))
    elif width == 0:
        width = max(1, int(w * height / h))
    return im.resize((width, height), resample)


class LineTransform:
    """PIL line image -> float tensor ``(C, H, W)`` for a network whose input is ``(B, C, H, W)``."""

    def __init__(self, height: int, width: int, channels: int, padding: int = 16, center_normalize: bool = False):
        self.height = height
        self.width = width
        self.channels = channels
        self.padding = padding
        self.channel_height = False
        if height == 1 and width == 0 and channels > 3:
            self.channel_height = True
            self.scale = (channels, 0)
        elif height > 1 and width == 0 and channels in (1, 3):
            self.scale = (height, 0)
        elif height == 0 and width > 1 and channels in (1, 3):
            self.scale = (0, width)
        elif height > 0 and width > 0 and channels in (1, 3):
            self.scale = (height, width)
            self.padding = 0
        elif height == 0 and width == 0 and channels in (1, 3):
            self.scale = (0, 0)
            self.padding = 0
        else:
            raise InputError(f"invalid input spec (height {height}, width {width}, channels {channels})")
        self.center_normalize = bool(center_normalize) and channels == 1 and height > 1 and width == 0
        self.mode = "RGB" if channels == 3 else "L"

    @classmethod
    def from_model_input(
        cls,
        input_shape: tuple[int, int, int, int],
        padding: int = 16,
        seg_type: str | None = None,
        center_normalize: bool | None = None,
    ) -> LineTransform:
        """Builds the transform for a model's input; bbox lines get centerline normalisation (if 1 channel)."""
        _, c, h, w = input_shape
        if center_normalize is None:
            center_normalize = seg_type == "bbox"
        return cls(h, w, c, padding=padding, center_normalize=center_normalize)

    def to_image(self, im: Image.Image) -> Image.Image:
        """The scaled, padded PIL image before tensor conversion (useful for inspection)."""
        im = im.convert(self.mode) if im.mode != self.mode else im
        hh, ww = self.scale
        if self.center_normalize:
            im = center_normalize(im, hh)
        elif hh and ww:
            im = im.resize((ww, hh), Image.Resampling.BILINEAR)
        elif hh or ww:
            im = _fixed_resize(im, hh, ww)
        if self.padding:
            fill = (255, 255, 255) if self.mode == "RGB" else 255
            w, h = im.size
            padded = Image.new(self.mode, (w + 2 * self.padding, h), fill)  # type: ignore[arg-type]
            padded.paste(im, (self.padding, 0))
            im = padded
        return im

    def __call__(self, im: Image.Image) -> torch.Tensor:
        im = self.to_image(im)
        arr = np.asarray(im, dtype=np.uint8)
        t = torch.from_numpy(arr.astype(np.float32) / 255.0)
        t = t.permute(2, 0, 1) if t.dim() == 3 else t[None]
        t = t.max() - t
        if self.channel_height:
            t = t.permute(1, 0, 2)
        return t.contiguous()


def image_mode(t: torch.Tensor) -> str:
    """kraken's per-sample mode: 'RGB' for 3 channels, '1' when bitonal, else 'L'."""
    if t.shape[0] == 3:
        return "RGB"
    vals = torch.unique(t)
    return "1" if vals.numel() <= 2 and bool(((vals == 0) | (vals == vals.max())).all()) else "L"


__all__ = ["CenterNormalizer", "LineTransform", "center_normalize", "image_mode"]
