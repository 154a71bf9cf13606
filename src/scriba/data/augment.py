"""Document degradations for training lines, in torch only.

They work on the model's input convention: a ``(C, H, W)`` float tensor, inverted, so ink is high (~1) and
paper and padding are ~0. Each degradation imitates something that happens to real manuscripts and scans:
a slanted or wavy baseline, thicker or thinner strokes, blur, faded or uneven ink, stains and show-through,
scanner noise and speckles. The width is never changed, so sequence lengths stay valid.

Every random draw comes from a ``torch.Generator`` seeded per sample, which makes augmentation
reproducible whichever DataLoader worker handles a sample (and therefore across resumed runs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class Augmenter:
    """Callable ``aug(image, generator) -> image``; a sample is degraded with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        g = generator if generator is not None else torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
        if _u(g) >= self.p:
            return image
        x = image.unsqueeze(0).float()
        for probability, degrade in _DEGRADATIONS:
            if _u(g) < probability:
                x = degrade(x, g)
        return x.squeeze(0).clamp_(0.0, 1.0)


def _u(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _affine(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Slight rotation, slant (shear), vertical scaling and shift, as from a skewed scan or another hand."""
    _, _, h, w = x.shape
    angle = math.radians(_u(g, -1.5, 1.5))
    shear = _u(g, -0.2, 0.2)
    sy = _u(g, 0.9, 1.1)
    ty = _u(g, -0.04, 0.04)
    # normalised coordinates are anisotropic for long lines; convert the rotation with the aspect ratio
    aspect = w / max(h, 1)
    cos, sin = math.cos(angle), math.sin(angle)
    theta = torch.tensor([[cos, (-sin + shear) / aspect, 0.0], [sin * aspect, cos / sy, ty]], dtype=x.dtype).unsqueeze(
        0
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _wavy(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A gently undulating baseline (cockled parchment, curved page)."""
    _, _, h, w = x.shape
    amp = _u(g, 0.01, 0.05)
    periods = _u(g, 0.5, 3.0)
    phase = _u(g, 0, 2 * math.pi)
    xs = torch.linspace(-1, 1, w)
    ys = torch.linspace(-1, 1, h)
    dy = amp * torch.sin(periods * math.pi * xs + phase)
    gy = ys[:, None] + dy[None, :]
    gx = xs[None, :].expand(h, w)
    grid = torch.stack((gx, gy), dim=-1).unsqueeze(0).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _stroke_width(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Thicker (ink spread, bold pen) or thinner (worn, faint) strokes; ink is high, so max-pooling dilates."""
    if _u(g) < 0.5:
        y = F.max_pool2d(x, 3, stride=1, padding=1)
    else:
        y = -F.max_pool2d(-x, 3, stride=1, padding=1)
    mix = _u(g, 0.4, 1.0)
    return x + mix * (y - x)


def _blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Out-of-focus capture or ink bleeding."""
    sigma = _u(g, 0.3, 1.3)
    radius = max(1, int(math.ceil(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0), groups=c)


def _smooth_field(x: torch.Tensor, g: torch.Generator, cells_x: int, cells_y: int = 2) -> torch.Tensor:
    _, _, h, w = x.shape
    coarse = torch.rand((1, 1, cells_y, max(2, cells_x)), generator=g, dtype=x.dtype)
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)


def _fade(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Faded ink, evenly or in patches along the line."""
    floor = _u(g, 0.45, 0.95)
    cells = max(2, int(x.shape[-1] / max(x.shape[-2], 1) * _u(g, 0.3, 1.5)))
    field = floor + (1 - floor) * _smooth_field(x, g, cells)
    return x * field


def _stain(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Darker paper in places: stains, foxing, text showing through from the other side."""
    amp = _u(g, 0.03, 0.2)
    cells = max(2, int(x.shape[-1] / max(x.shape[-2], 1) * _u(g, 0.5, 2.0)))
    field = _smooth_field(x, g, cells, cells_y=3)
    return x + amp * field * field


def _noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Sensor noise plus a few dark and light speckles (dust, pinholes)."""
    sigma = _u(g, 0.01, 0.08)
    x = x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)
    density = _u(g, 0.0, 0.004)
    r = torch.rand(x.shape, generator=g, dtype=x.dtype)
    x = torch.where(r < density / 2, torch.ones_like(x), x)
    return torch.where((r >= density / 2) & (r < density), torch.zeros_like(x), x)


# each degradation with the probability of applying it, in the order they are applied (and drawn)
_DEGRADATIONS = (
    (0.3, _affine), (0.2, _wavy), (0.25, _stroke_width), (0.2, _blur), (0.3, _fade), (0.2, _stain), (0.3, _noise),
)
