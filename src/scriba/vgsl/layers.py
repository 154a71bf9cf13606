"""VGSL layers. Every layer maps ``(x (N, C, H, W), seq_lens (N,) | None)`` to the same pair.

Attribute names (``co``, ``lin``, ``layer``) follow kraken so that state dict keys match its weights files.
Padding invariance: layers zero every frame at or beyond a line's length on output, and each layer only lets
valid frames depend on valid frames plus zeros, which is exactly what an unpadded line sees (the convolutions'
own zero padding). RNNs (``rnn.py``) see each line's valid frames only; group norm takes its statistics over
valid frames only.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scriba.vgsl.frames import Lens, mask_frames
from scriba.vgsl.rnn import TransposedSummarizingRNN  # noqa: F401  (networks are built from this module's names)

logger = logging.getLogger(__name__)

# VGSL dimension numbers (0=N, 1=H, 2=W, 3=C) to NCHW axes
VGSL_DIMS = {0: 0, 1: 2, 2: 3, 3: 1}


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in NHWC memory order, which torch also recognises for one channel (where both orders coincide)."""
    n, c, h, w = x.shape
    if c == 1 and x.is_contiguous():
        # the same memory; ``contiguous(channels_last)`` would keep NCHW strides, which select NCHW kernels
        return x.as_strided((n, c, h, w), (h * w, 1, w, 1))
    return x.contiguous(memory_format=torch.channels_last)


WEIGHT_GRADIENT_LAYOUTS = ("nhwc", "nchw")
_wgrad_layout = "nhwc"


def set_weight_gradient_layout(layout: str) -> str:
    """Sets the memory layout in which CPU convolutions compute their weight gradients; returns the old one.

    ``nhwc`` (the default): torch's own backward on the channels-last tensors. ``nchw``: weight and bias
    gradients on NCHW copies of input and gradient, which oneDNN blocks (nChw8c). Both give the same values up
    to the order of the sums; only the speed differs, by CPU (``scriba.machine`` chooses for the machine).
    """
    global _wgrad_layout
    if layout not in WEIGHT_GRADIENT_LAYOUTS:
        raise ValueError(f"unknown weight-gradient layout {layout!r} (expected nhwc or nchw)")
    before, _wgrad_layout = _wgrad_layout, layout
    return before


class _ConvBlockedWgrad(torch.autograd.Function):
    """A 2-D convolution whose weight and bias gradients are computed on NCHW copies of input and gradient."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.conf = (list(stride), list(padding), list(dilation), bias is not None)
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, padding, dilation, has_bias = ctx.conf
        bias_sizes = [weight.shape[0]] if has_bias else None
        conv_bwd = torch.ops.aten.convolution_backward
        gi = gw = gb = None
        if ctx.needs_input_grad[0]:
            gi = conv_bwd(g, x, weight, bias_sizes, stride, padding, dilation, False, [0, 0], 1, [True, False, False])[0]
        if ctx.needs_input_grad[1] or (has_bias and ctx.needs_input_grad[2]):
            _, gw, gb = conv_bwd(
                g.contiguous(), x.contiguous(), weight, bias_sizes, stride, padding, dilation, False, [0, 0], 1,
                [False, True, has_bias],
            )
        return gi, gw, gb, None, None, None


class ActConv2D(nn.Module):
    """Convolution (``co``) plus activation; ``transposed`` makes it a transposed convolution."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int],
        stride: tuple[int, int] = (1, 1),
        dilation: tuple[int, int] = (1, 1),
        nl: str = "l",
        transposed: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel
        self.stride = stride
        self.dilation = dilation
        self.nl = nl
        self.transposed = transposed
        self.padding: tuple[int, int] = ((dilation[0] * (kernel[0] - 1)) // 2, (dilation[1] * (kernel[1] - 1)) // 2)
        cls = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.co = cls(in_channels, out_channels, kernel, stride=stride, padding=self.padding, dilation=dilation)

    def out_len(self, n: torch.Tensor | int, axis: int) -> torch.Tensor | int:
        k, s, d, p = self.kernel_size[axis], self.stride[axis], self.dilation[axis], self.padding[axis]
        if self.transposed:
            return (n - 1) * s - 2 * p + d * (k - 1) + 1
        return (n + 2 * p - d * (k - 1) - 1) // s + 1

    def out_shape(self, c: int, h: int) -> tuple[int, int]:
        return self.out_channels, int(self.out_len(h, 0)) if h else 0

    def forward(self, x: torch.Tensor, seq_lens: Lens = None) -> tuple[torch.Tensor, Lens]:
        o, seq_lens = self.pre_activation(x, seq_lens)
        return mask_frames(self.activate(o), seq_lens), seq_lens

    def pre_activation(self, x: torch.Tensor, seq_lens: Lens = None) -> tuple[torch.Tensor, Lens]:
        """The convolution alone, unmasked (padding frames hold whatever the kernel computed there)."""
        # oneDNN convolves channels-last (NHWC) tensors without reordering them: a 1-channel input conv runs
        # ~25x faster than on NCHW, and the following max pooling ~10x; the output stays channels-last.
        x = channels_last(x)
        co = self.co
        if (
            self.in_channels > 1  # the 1-channel first convolution is faster as it is
            and not self.transposed
            and x.dtype == torch.float32
            and x.device.type == "cpu"
            and torch.is_grad_enabled()
            and co.weight.requires_grad
            and not torch.is_autocast_enabled("cpu")
            and _wgrad_layout == "nchw"
        ):
            o = _ConvBlockedWgrad.apply(x, co.weight, co.bias, co.stride, co.padding, co.dilation)
        else:
            o = co(x)
        if seq_lens is not None:
            seq_lens = torch.clamp(self.out_len(seq_lens, 1), min=1).to(seq_lens.dtype)  # type: ignore[arg-type]
        return o, seq_lens

    @property
    def commutes_with_max(self) -> bool:
        """The activation is monotonic and elementwise, so ``max_pool(act(x)) == act(max_pool(x))``, gradients
        included (ReLU's ties are all at zero, where its gradient is zero anyway)."""
        return self.nl in ("r", "l") and not self.transposed

    def activate(self, o: torch.Tensor) -> torch.Tensor:
        if self.nl == "s":
            # sigmoid outputs stay logits while training (for BCE-with-logits losses), as kraken does
            if not self.training:
                o = torch.sigmoid(o)
        elif self.nl == "t":
            o = torch.tanh(o)
        elif self.nl == "r":
            o = F.relu_(o)  # in place: a fresh output buffer costs page faults (autograd allows it here)
        elif self.nl == "lr":
            o = F.leaky_relu(o)
        elif self.nl == "m":
            o = torch.softmax(o, dim=1)
        return o


class MaxPool(nn.Module):
    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int]) -> None:
        super().__init__()
        self.kernel_size = kernel
        self.stride = stride
        self.layer = nn.MaxPool2d(kernel, stride)

    def out_shape(self, c: int, h: int) -> tuple[int, int]:
        return c, ((h - self.kernel_size[0]) // self.stride[0] + 1) if h else 0

    def forward(self, x: torch.Tensor, seq_lens: Lens = None) -> tuple[torch.Tensor, Lens]:
        o = self.layer(x)
        if seq_lens is not None:
            seq_lens = torch.clamp((seq_lens - self.kernel_size[1]) // self.stride[1] + 1, min=1)
        return mask_frames(o, seq_lens), seq_lens


class Dropout(nn.Module):
    def __init__(self, p: float, dim: int) -> None:
        super().__init__()
        self.p = p
        self.dim = dim
        self.layer = nn.Dropout2d(p) if dim == 2 else nn.Dropout(p)

    def out_shape(self, c: int, h: int) -> tuple[int, int]:
        return c, h

    def forward(self, x: torch.Tensor, seq_lens: Lens = None) -> tuple[torch.Tensor, Lens]:
        return self.layer(x), seq_lens


class Identity(nn.Module):
    def out_shape(self, c: int, h: int) -> tuple[int, int]:
        return c, h

    def forward(self, x: torch.Tensor, seq_lens: Lens = None) -> tuple[torch.Tensor, Lens]:
        return x, seq_lens


class Addition(nn.Module):
    """Sums the chunks of size ``chunk`` along a dimension (VGSL ``A<dim>,<chunk>``)."""

    def __init__(self, dim: int, chunk: int) -> None:
        super().__init__()
        self.vgsl_dim = dim
        self.dim = VGSL_DIMS[dim]
        self.chunk = chunk

    def out_shape(self, c: int, h: int) -> tuple[int, int]:
        if self.dim == 1:
            return self.chunk, h
        if self.dim == 2:
            return c, self.chunk
        return c, h

    def forward(self, x: torch.Tensor, seq_lens: Lens = None) -> tuple[torch.Tensor, Lens]:
        parts = torch.split(x, self.chunk, dim=self.dim)
        o = parts[0]
        for p in parts[1:]:
            if p.shape[self.dim] != self.chunk:
                raise ValueError(f"addition layer: dimension {self.vgsl_dim} is not a multiple of {self.chunk}")
            o = o + p
        if self.dim == 3 and seq_lens is not None:
            seq_lens = torch.clamp(seq_lens, max=self.chunk)
        return o, seq_lens


class Reshape(nn.Module):
    """VGSL ``S<d>(<a>x<b>)<e>,<f>``: splits axis d into a x b, moves a part next to axis e/f and merges it."""

    def __init__(self, src_dim: int, part_a: int, part_b: int, high: int, low: int) -> None:
        super().__init__()
        self.src_dim = VGSL_DIMS[src_dim]
        self.part_a = part_a if part_a else -1
        self.part_b = part_b if part_b else -1
        self.high = VGSL_DIMS[high]
        self.low = VGSL_DIMS[low]

    def _plan(self) -> tuple[int, int]:
        dest, src = self.low, self.src_dim
        if self.high != src:
            dest = self.high
        else:
            src += 1
        return src, dest

    def _reshape(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape)
        x = x.reshape(shape[: self.src_dim] + (self.part_a, self.part_b) + shape[self.src_dim + 1 :])
        src, dest = self._plan()
        # bubble axis ``src`` to position ``dest``, then merge it with the axis after it
        perm = list(range(x.dim()))
        step = 1 if dest > src else -1
        for i in range(src, dest, step):
            perm[i], perm[i + step] = perm[i + step], perm[i]
        x = x.permute(perm)
        s = tuple(x.shape)
        return x.reshape(s[:dest] + (s[dest] * s[dest + 1],) + s[dest + 2 :])

    def out_shape(self, c: int, h: int) -> tuple[int, int]:
        probe = torch.zeros(1, c, h or 1, 8)
        o = self._reshape(probe)
        return o.shape[1], (o.shape[2] if h else 0)

    def forward(self, x: torch.Tensor, seq_lens: Lens = None) -> tuple[torch.Tensor, Lens]:
        w = x.shape[3]
        o = self._reshape(x)
        if seq_lens is not None and o.shape[3] != w:
            seq_lens = (seq_lens.float() * (o.shape[3] / w)).long()
        return o, seq_lens


class LinSoftmax(nn.Module):
    """Linear projection over channels (``lin``) returning logits; ``augmentation`` appends a constant 1 input."""

    def __init__(self, input_size: int, output_size: int, augmentation: bool = False) -> None:
        super().__init__()
        self.input_size = input_size
        self.output_size = output_size
        self.augmentation = augmentation
        self.lin = nn.Linear(input_size + (1 if augmentation else 0), output_size)

    def out_shape(self, c: int, h: int) -> tuple[int, int]:
        return self.output_size, h

    def forward(self, x: torch.Tensor, seq_lens: Lens = None) -> tuple[torch.Tensor, Lens]:
        x = x.permute(0, 2, 3, 1)
        if self.augmentation:
            x = torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)
        o = self.lin(x).permute(0, 3, 1, 2)
        return mask_frames(o, seq_lens), seq_lens

    def resize(self, output_size: int, del_indices: set[int] | tuple[int, ...] = ()) -> None:
        """Drops rows ``del_indices`` and grows/shrinks to ``output_size`` (new rows xavier, bias 0)."""
        old_w, old_b = self.lin.weight.data, self.lin.bias.data
        keep = [i for i in range(old_w.shape[0]) if i not in set(del_indices)]
        w, b = old_w[keep], old_b[keep]
        if output_size > w.shape[0]:
            extra = torch.empty(output_size - w.shape[0], w.shape[1], dtype=w.dtype)
            nn.init.xavier_uniform_(extra)
            w = torch.cat([w, extra])
            b = torch.cat([b, torch.zeros(output_size - b.shape[0], dtype=b.dtype)])
        else:
            w, b = w[:output_size], b[:output_size]
        self.lin = nn.Linear(w.shape[1], output_size)
        self.lin.weight.data.copy_(w)
        self.lin.bias.data.copy_(b)
        self.output_size = output_size


class GroupNorm(nn.Module):
    """Group normalisation (``layer``) in float32, with statistics over each line's valid frames only."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.channels = channels
        self.groups = groups
        self.layer = nn.GroupNorm(groups, channels)

    def out_shape(self, c: int, h: int) -> tuple[int, int]:
        return c, h

    def forward(self, x: torch.Tensor, seq_lens: Lens = None) -> tuple[torch.Tensor, Lens]:
        dtype = x.dtype
        xf = x.float()
        if seq_lens is None:
            o = F.group_norm(xf, self.groups, self.layer.weight.float(), self.layer.bias.float(), self.layer.eps)
            return o.to(dtype), seq_lens
        n, c, h, w = xf.shape
        keep = (torch.arange(w, device=x.device)[None, :] < seq_lens.to(x.device)[:, None]).float()
        keep = keep[:, None, None, None, :]
        g = xf.reshape(n, self.groups, c // self.groups, h, w)
        count = (keep.sum(dim=(2, 3, 4), keepdim=True) * (c // self.groups) * h).clamp(min=1)
        mean = (g * keep).sum(dim=(2, 3, 4), keepdim=True) / count
        var = (((g - mean) * keep) ** 2).sum(dim=(2, 3, 4), keepdim=True) / count
        g = (g - mean) / torch.sqrt(var + self.layer.eps)
        o = g.reshape(n, c, h, w) * self.layer.weight.float()[None, :, None, None]
        o = o + self.layer.bias.float()[None, :, None, None]
        return mask_frames(o, seq_lens).to(dtype), seq_lens


class Series(nn.Sequential):
    """Layers applied in order; indexable and sliceable, so a prefix or suffix of the network can run alone."""

    def out_shape(self, c: int, h: int) -> tuple[int, int]:
        m: Any
        for m in self:
            c, h = m.out_shape(c, h)
        return c, h

    def forward(self, x: torch.Tensor, seq_lens: Lens = None) -> tuple[torch.Tensor, Lens]:  # type: ignore[override]
        mods: list[Any] = list(self)
        i = 0
        while i < len(mods):
            j = _pool_after(mods, i)
            if j is None:
                x, seq_lens = mods[i](x, seq_lens)
                i += 1
                continue
            # conv, [channel dropout,] max pool run as conv, pool, activation, dropout: the same values and
            # gradients (activation and per-channel scaling commute with max), but the elementwise passes run on
            # the pooled tensor, 4x smaller; the first convolution's output is the network's largest activation
            conv, pool = mods[i], mods[j]
            x, seq_lens = conv.pre_activation(x, seq_lens)
            if seq_lens is not None and not bool((seq_lens >= pool.kernel_size[1]).all()):
                # a line shorter than the pooling window: its only window reaches into the padding
                x = mask_frames(x, seq_lens)
            x, seq_lens = pool(x, seq_lens)
            x = conv.activate(x)
            for d in mods[i + 1 : j]:
                x, seq_lens = d(x, seq_lens)
            i = j + 1
        return x, seq_lens


def _pool_after(mods: list[nn.Module], i: int) -> int | None:
    """The index of the max pooling that ``mods[i]``'s activation can be moved behind, if there is one."""
    if not (isinstance(mods[i], ActConv2D) and mods[i].commutes_with_max):
        return None
    j = i + 1
    while j < len(mods) and isinstance(mods[j], Dropout) and mods[j].dim == 2:
        j += 1
    return j if j < len(mods) and isinstance(mods[j], MaxPool) else None


class Parallel(nn.Module):
    """Runs children on the same input and concatenates their outputs on C (heights and widths must agree)."""

    def __init__(self, children: list[tuple[str, nn.Module]]) -> None:
        super().__init__()
        for name, m in children:
            self.add_module(name, m)

    def out_shape(self, c: int, h: int) -> tuple[int, int]:
        shapes = [m.out_shape(c, h) for m in self.children()]  # type: ignore[operator]
        if len({s[1] for s in shapes}) != 1:
            raise ValueError(f"parallel block outputs differ in height: {shapes}")
        return sum(s[0] for s in shapes), shapes[0][1]

    def forward(self, x: torch.Tensor, seq_lens: Lens = None) -> tuple[torch.Tensor, Lens]:
        outs = [m(x, seq_lens) for m in self.children()]
        if len({o.shape[2:] for o, _ in outs}) != 1:
            raise ValueError("parallel block outputs differ in height or width")
        return torch.cat([o for o, _ in outs], dim=1), outs[0][1]
