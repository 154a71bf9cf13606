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

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image

from scriba.errors import InputError

_LANCZOS = Image.Resampling.LANCZOS
# torchvision's ``ToDtype(float32, scale=True)`` (kraken's conversion) computes ``float32(x) * float32(1/255)``,
# which differs from ``x / 255`` in the last bit for some values.
_INVERT_BASE = np.arange(256, dtype=np.float32) * np.float32(1.0 / 255)


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


# Up to this many samples along the filtered axis the correlation is a matrix product; beyond, an FFT.
_DIRECT_MAX = 384


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Runs torch ops on one thread: a product this small spends more waiting for a second (busy) core than
    computing (about 10x slower on a loaded 2-core machine; numpy's BLAS, which ignores torch's setting, too)."""
    threads = torch.get_num_threads()
    if threads == 1:  # DataLoader workers already run on one thread
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fast_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: lengths pocketfft transforms quickly (often far below the next power of 2)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _correlate(a: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """Correlates 2-D float64 ``a`` along ``axis`` with a symmetric odd ``kernel``, zeros beyond the edges.

    Taps farther than the signal is long only ever meet zeros, so the kernel is cut to them first. Short axes
    (line heights) use a Toeplitz matrix product: direct sums, with rounding relative to each value like
    scipy's, and far fewer operations than an FFT of a kernel wider than the signal. Long axes use an FFT of
    the fewest samples free of wrap-around in the part that is kept.
    """
    n = a.shape[axis]
    r = min(len(kernel) // 2, n - 1)
    kernel = kernel[len(kernel) // 2 - r : len(kernel) // 2 + r + 1]
    if n <= _DIRECT_MAX:
        d = np.arange(n)[None, :] - np.arange(n)[:, None]
        m = np.where(np.abs(d) <= r, kernel[np.clip(d + r, 0, 2 * r)], 0.0)
        tm, ta = torch.from_numpy(m), torch.from_numpy(np.ascontiguousarray(a))
        with _one_thread():
            return (tm @ ta if axis == 0 else ta @ tm.T).numpy()
    # linear convolution (a symmetric kernel's correlation) c = a * kernel; the output is c[r : r + n], which
    # a circular convolution of length >= n + r leaves untouched by wrap-around
    nfft = _fast_len(n + r)
    spec = np.fft.rfft(a, nfft, axis=axis)
    kspec = np.fft.rfft(kernel, nfft)
    spec *= kspec[:, None] if axis == 0 else kspec[None, :]
    full = np.fft.irfft(spec, nfft, axis=axis)
    return full[r : r + n] if axis == 0 else full[:, r : r + n]


def _gaussian(a: np.ndarray, sigma: float, axis: int, mode: str = "constant") -> np.ndarray:
    """scipy ``gaussian_filter1d`` (truncate 4) on 2-D float64 ``a``; ``mode`` 'constant' (0) or 'reflect'."""
    if sigma <= 1e-15:
        return a
    k = _gauss_kernel(sigma)
    if mode == "constant":
        return _correlate(a, k, axis)
    r = len(k) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    full = _correlate(np.pad(a, pad, mode="symmetric"), k, axis)
    return full[r:-r] if axis == 0 else full[:, r:-r]


def _uniform(a: np.ndarray, size: int, axis: int) -> np.ndarray:
    """scipy ``uniform_filter1d`` with zero borders: window ``[i - size//2, i + size - size//2 - 1]``.

    Window sums are differences of prefix sums; the prefix sums run along ``axis`` in place (no transposed
    copy), and zeros beyond the edges become clipped indices.
    """
    if size <= 1:
        return a
    n = a.shape[axis]
    before = size // 2
    shape = list(a.shape)
    shape[axis] = n + 1
    c = np.empty(shape)
    lead = (slice(None),) * axis
    c[lead + (0,)] = 0.0
    np.cumsum(a, axis=axis, out=c[lead + (slice(1, None),)])
    i = np.arange(n)
    out = np.take(c, np.minimum(i + size - before, n), axis=axis)
    out -= np.take(c, np.maximum(i - before, 0), axis=axis)
    out /= size
    return out


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
        rows = self.center[None, :] + np.arange(-self.r, self.r)[:, None]
        out = img[np.clip(rows, 0, h - 1), np.arange(w)[None, :]].astype(np.float32)
        # rows beyond the image are the background value (ocropy pads the image with it)
        out[(rows < 0) | (rows >= h)] = cval
        return out

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
        arr = np.asarray(self.to_image(im), dtype=np.uint8)
        if arr.ndim == 3:
            arr = arr.transpose(2, 0, 1)
        # One table lookup does kraken's to-float and ``max - x`` inversion with its exact float32 results, in
        # numpy: torch would spread these small element-wise ops over its thread pool, which costs more than
        # the work on a busy machine.
        inverted = _INVERT_BASE[arr.max()] - _INVERT_BASE
        t = torch.from_numpy(inverted[arr])
        if t.dim() == 2:
            t = t[None]
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
