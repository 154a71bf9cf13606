"""Recognition networks built from VGSL specs, with kraken's module names and metadata."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn as tnn

from scriba.codec import Codec
from scriba.errors import SpecError
from scriba.vgsl import layers as L
from scriba.vgsl.parser import Block, named_spec, parse_spec

logger = logging.getLogger(__name__)

# CPU inference runs big batches in slices of about this many input values. The first convolution's output
# is tens of times larger than its input, and activations over glibc's 32 MiB mmap threshold come back as
# fresh pages on every call: the page faults then cost more than the arithmetic (-B 16: 6.5 -> 4.2 ms/line).
_SLICE_VALUES = 1 << 18

# A block with more weights than this (1 GiB in fp32), or one whose output on a probe of PROBE_WIDTH frames
# holds more values, is a typo (Cr3,3,320000) rather than a network: refused before anything is allocated.
MAX_BLOCK_VALUES = 1 << 28
PROBE_WIDTH = 64
# heights a variable-height network (input height 0) is tried on: its output must have height 1 on each
PROBE_HEIGHTS = (32, 57)

# numeric parameters that must be at least 1, with the words for them in messages
_POSITIVE = {
    "conv": {"kh": "kernel height", "kw": "kernel width", "out": "output channels", "sy": "stride",
             "sx": "stride", "dy": "dilation", "dx": "dilation"},
    "maxpool": {"ky": "window height", "kx": "window width", "sy": "stride", "sx": "stride"},
    "rnn": {"out": "hidden size"},
    "output": {"out": "output size"},
    "groupnorm": {"groups": "number of groups"},
    "addition": {"chunk": "chunk size"},
}  # fmt: skip
# VGSL dimension numbers each block accepts (0 batch, 1 height, 2 width, 3 channels)
_DIMS: dict[str, dict[str, tuple[int, ...]]] = {"reshape": {"d": (0, 1, 2, 3), "e": (0, 1, 2, 3), "f": (0, 1, 2, 3)}, "addition": {"dim": (1, 2, 3)}}

DEFAULT_METADATA: dict[str, Any] = {
    "accuracy": [],
    "metrics": [],
    "seg_type": None,
    "one_channel_mode": None,
    "model_type": ["recognition"],
    "legacy_polygons": False,
}


def _check_params(blk: Block, c: int) -> None:
    """Parameters the grammar accepts but no layer can use (``Cr0,0,16``, ``Mp2,2,0,0``, ``S7(1x0)1,3``)."""
    p = blk.params
    for key, what in _POSITIVE.get(blk.kind, {}).items():
        if p.get(key) is not None and int(p[key]) < 1:
            raise SpecError(f"VGSL block {blk.source!r}: the {what} must be at least 1, not {p[key]}")
    for key, allowed in _DIMS.get(blk.kind, {}).items():
        if int(p[key]) not in allowed:
            raise SpecError(
                f"VGSL block {blk.source!r}: dimension {p[key]} does not exist "
                f"(expected one of {', '.join(map(str, allowed))}: 0 batch, 1 height, 2 width, 3 channels)"
            )
    if blk.kind == "dropout" and p["p"] and not 0.0 <= float(p["p"]) <= 1.0:
        raise SpecError(f"VGSL block {blk.source!r}: a dropout probability lies between 0 and 1, not {p['p']}")
    weights = 0
    if blk.kind == "conv":
        weights = c * int(p["out"]) * int(p["kh"]) * int(p["kw"])
    elif blk.kind in ("rnn", "output"):
        n = int(p["out"])
        weights = 8 * (c + n) * n if blk.kind == "rnn" else (c + 1) * n
    if weights > MAX_BLOCK_VALUES:
        raise SpecError(f"VGSL block {blk.source!r} would have {weights:,} weights on {c} input channels (too large)")


def _build_block(blk: Block, c: int, h: int) -> tuple[tnn.Module, int, int]:
    p = blk.params
    if blk.kind not in ("series", "parallel"):
        _check_params(blk, c)
    try:
        if blk.kind == "conv":
            stride = (int(p["sy"]), int(p["sx"])) if p["sy"] else (1, 1)
            dil = (int(p["dy"]), int(p["dx"])) if p["dy"] else (1, 1)
            m: tnn.Module = L.ActConv2D(
                c, int(p["out"]), (int(p["kh"]), int(p["kw"])), stride, dil, p["nl"], bool(p["transposed"])
            )
        elif blk.kind == "maxpool":
            k = (int(p["ky"]), int(p["kx"]))
            m = L.MaxPool(k, (int(p["sy"]), int(p["sx"])) if p["sy"] else k)
        elif blk.kind == "dropout":
            m = L.Dropout(float(p["p"]) if p["p"] else 0.5, int(p["dim"]) if p["dim"] else 1)
        elif blk.kind == "reshape":
            m = L.Reshape(int(p["d"]), int(p["a"]), int(p["b"]), int(p["e"]), int(p["f"]))
        elif blk.kind == "rnn":
            if p["legacy"]:
                raise SpecError(f"legacy clstm/ocropy RNN blocks are not supported: {blk.source!r}")
            m = L.TransposedSummarizingRNN(
                c,
                int(p["out"]),
                p["dir"],
                transpose=p["dim"] == "y",
                summarize=bool(p["sum"]),
                cell=p["type"],
            )
        elif blk.kind == "output":
            dim, kind, n = int(p["dim"]), p["kind"], int(p["out"])
            if dim == 0:
                raise SpecError(f"output layers over dimension 0 are not supported: {blk.source!r}")
            if dim == 2 and kind == "c":
                raise SpecError(f"CTC output needs dimension 1: {blk.source!r}")
            if dim == 1:
                m = L.LinSoftmax(c, n, bool(p["aug"]))
            else:
                m = L.ActConv2D(c, n, (1, 1), nl="l")
        elif blk.kind == "groupnorm":
            g = int(p["groups"])
            if c % g:
                raise SpecError(f"group norm: {c} channels are not divisible into {g} groups: {blk.source!r}")
            m = L.GroupNorm(c, g)
        elif blk.kind == "addition":
            m = L.Addition(int(p["dim"]), int(p["chunk"]))
        elif blk.kind == "identity":
            m = L.Identity()
        elif blk.kind == "series":
            seq = L.Series()
            for child in blk.children:
                cm, c, h = _build_block(child, c, h)
                seq.add_module(child.name, cm)
            return seq, c, h
        elif blk.kind == "parallel":
            kids = []
            outs = []
            for child in blk.children:
                cm, cc, ch = _build_block(child, c, h)
                kids.append((child.name, cm))
                outs.append((cc, ch))
            if len({o[1] for o in outs}) != 1:
                raise SpecError(f"parallel block {blk.source!r}: branch outputs differ in height {outs}")
            return L.Parallel(kids), sum(o[0] for o in outs), outs[0][1]
        else:  # pragma: no cover - the parser only yields the kinds above
            raise SpecError(f"unknown block kind {blk.kind}")
        c2, h2 = m.out_shape(c, h)  # type: ignore[operator]
    except SpecError:
        raise
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        raise SpecError(f"VGSL block {blk.source!r} cannot be built on input of {c} channels, height {h}: {exc}") from None
    if h and h2 <= 0:
        raise SpecError(f"VGSL block {blk.source!r} reduces the height {h} to nothing")
    if c2 < 1:
        raise SpecError(f"VGSL block {blk.source!r} leaves no channels")
    if c2 * max(h2, 1) * PROBE_WIDTH > MAX_BLOCK_VALUES:
        raise SpecError(f"VGSL block {blk.source!r} outputs {c2} channels of height {h2} (too large)")
    return m, c2, h2


def init_weights(module: tnn.Module) -> None:
    """kraken's initialisation: xavier linear, orthogonal LSTM (forget bias 1), uniform conv."""
    for m in module.modules():
        if isinstance(m, tnn.Linear):
            tnn.init.xavier_uniform_(m.weight)
            tnn.init.zeros_(m.bias)
        elif isinstance(m, (tnn.LSTM, tnn.GRU)):
            for name, p in m.named_parameters():
                if "weight" in name:
                    tnn.init.orthogonal_(p)
                elif "bias" in name and isinstance(m, tnn.LSTM):
                    tnn.init.zeros_(p)
                    hs = m.hidden_size
                    p.data[hs : 2 * hs] = 1.0
        elif isinstance(m, (tnn.Conv2d, tnn.ConvTranspose2d)):
            tnn.init.uniform_(m.weight, -0.1, 0.1)
            if m.bias is not None:
                tnn.init.uniform_(m.bias, -0.1, 0.1)


def _count_flops(m: tnn.Module, shape: tuple[int, int, int], out: list, name: str = "") -> tuple[int, int, int]:
    """Appends ``(name, FLOPs, output shape)`` for ``m`` (each leaf of a series or parallel block) to ``out``."""
    c, h, w = shape
    if isinstance(m, L.Series):
        for child_name, child in m.named_children():
            shape = _count_flops(child, shape, out, child_name)
        return shape
    if isinstance(m, L.Parallel):
        shapes = [_count_flops(child, shape, out, child_name) for child_name, child in m.named_children()]
        return sum(s[0] for s in shapes), shapes[0][1], shapes[0][2]
    flops = 0
    if isinstance(m, L.ActConv2D):
        c2, h2 = m.out_shape(c, h)
        w2 = int(m.out_len(w, 1))
        kh, kw = m.kernel_size
        # a transposed convolution applies its kernel once per input position, a convolution once per output
        flops = 2 * kh * kw * c * c2 * (h * w if m.transposed else h2 * w2)
        c, h, w = c2, h2, w2
    elif isinstance(m, L.MaxPool):
        c, h = m.out_shape(c, h)
        w = (w - m.kernel_size[1]) // m.stride[1] + 1
    elif isinstance(m, L.Reshape):
        _, c, h, w = m._reshape(torch.empty(1, c, h, w, device="meta")).shape
    elif isinstance(m, L.TransposedSummarizingRNN):
        steps, seqs = (h, w) if m.transpose else (w, h)
        gates = 3 if m.cell == "G" else 4
        flops = (2 if m.bidi else 1) * seqs * steps * 2 * gates * m.hidden_size * (c + m.hidden_size)
        c, h = m.out_shape(c, h)
        if m.summarize and not m.transpose:
            w = 1
    elif isinstance(m, L.LinSoftmax):
        flops = 2 * m.lin.in_features * m.output_size * h * w
        c = m.output_size
    elif isinstance(m, L.Addition):
        c, h = m.out_shape(c, h)
        if m.dim == 3:
            w = m.chunk
    else:  # dropout, group norm, identity: the shape stays
        c, h = m.out_shape(c, h)  # type: ignore[operator]
    out.append((name, flops, (c, h, w)))
    return c, h, w


class RecognitionModel(tnn.Module):
    """A VGSL network: ``forward(x, seq_lens) -> (logits (N, C, 1, W'), lens)`` plus codec and metadata.

    ``nn`` is an indexable :class:`~scriba.vgsl.layers.Series` of named layers; ``model.nn[:k]`` runs the first
    ``k`` layers (e.g. the convolutional front for pretraining).
    """

    def __init__(self, spec: str, codec: Codec | dict | None = None, *, init: bool = True, **metadata: Any) -> None:
        super().__init__()
        self.input, self.blocks = parse_spec(spec)
        b, c, h, w = self.input
        if c < 1:
            raise SpecError(f"VGSL input block of {spec!r} needs at least one channel")
        self.nn = L.Series()
        if h == 1 and w == 0 and c > 3:
            # channel-height mode: the line's height comes in as channels
            ch, hh = c, 1
        else:
            ch, hh = c, h
        for blk in self.blocks:
            m, ch, hh = _build_block(blk, ch, hh)
            self.nn.add_module(blk.name, m)
        self.output_shape = (ch, hh)
        if isinstance(codec, dict):
            codec = Codec(codec)
        self.codec: Codec | None = codec
        self.metadata: dict[str, Any] = {**copy.deepcopy(DEFAULT_METADATA), **metadata}
        if init:
            init_weights(self)

    @property
    def spec(self) -> str:
        return named_spec(self.input, self.blocks)

    @property
    def seg_type(self) -> str | None:
        return self.metadata.get("seg_type")

    @property
    def one_channel_mode(self) -> str | None:
        return self.metadata.get("one_channel_mode")

    @property
    def legacy_polygons(self) -> bool:
        return bool(self.metadata.get("legacy_polygons", False))

    def flops(self, input_width: int) -> list[tuple[str, int, tuple[int, int, int]]]:
        """``(layer name, FLOPs, output (C, H, W))`` of each layer's forward pass over one line ``input_width``
        wide (after scaling and padding), from the layers' own shapes.

        Multiply-adds count 2 FLOPs in convolutions, recurrent and linear layers; pooling, normalisation, dropout
        and activations count 0 (a few per cent of the work at most).
        """
        _, c, h, _ = self.input
        if h <= 0:
            raise SpecError(f"the FLOPs of {self.spec} depend on the line height, which the spec leaves free")
        out: list[tuple[str, int, tuple[int, int, int]]] = []
        _count_flops(self.nn, (c, h, input_width), out)
        return out

    def forward(self, x: torch.Tensor, seq_lens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if seq_lens is None:
            seq_lens = torch.full((x.shape[0],), x.shape[3], dtype=torch.long, device=x.device)
        per_line = x[0].numel() if x.shape[0] else 0
        if x.shape[0] > 1 and x.device.type == "cpu" and not torch.is_grad_enabled() and x.numel() > _SLICE_VALUES:
            return self._forward_slices(x, seq_lens, max(1, _SLICE_VALUES // per_line))
        o, lens = self.nn(x, seq_lens)
        if lens is None:  # pragma: no cover - every layer returns lengths when given some
            lens = torch.full((o.shape[0],), o.shape[3], dtype=torch.long)
        return o, lens

    def _forward_slices(self, x: torch.Tensor, seq_lens: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference over ``k`` lines at a time, each slice cut to its longest line; the output is the same as
        one pass over the batch (padding frames are zeros either way)."""
        widest = int(torch.argmax(seq_lens))
        outs, lens = [], []
        for i in range(0, x.shape[0], k):
            sl = seq_lens[i : i + k]
            # the slice with the widest line keeps the full width, so the output is as wide as one pass's
            w = x.shape[3] if i <= widest < i + k else max(1, int(sl.max()))
            o, ol = self.nn(x[i : i + k, :, :, :w], sl)
            outs.append(o)
            lens.append(ol)
        width = max(o.shape[3] for o in outs)
        out = torch.cat([tnn.functional.pad(o, (0, width - o.shape[3])) for o in outs])
        return out, torch.cat(lens)

    def _output_layer(self) -> L.LinSoftmax:
        last = self.nn[-1]
        if not isinstance(last, L.LinSoftmax):
            raise SpecError(f"the network does not end in a dimension-1 output layer: {self.spec}")
        return last

    @property
    def n_labels(self) -> int:
        """Outputs of the final layer: the codec's labels and the blank."""
        return int(self._output_layer().lin.out_features)

    def resize_output(self, n_out: int, del_labels: Sequence[int] | set[int] = ()) -> None:
        """Resizes the final output layer (rows ``del_labels`` removed first), keeping the other rows."""
        layer = self._output_layer()
        layer.resize(n_out, set(del_labels))
        blk = self.blocks[-1]
        blk.text = re.sub(r"\d+$", str(n_out), blk.text)
        self.output_shape = (n_out, self.output_shape[1])

    def append_output(self, n_out: int) -> None:
        """Appends a CTC output layer ``O1c<n_out>`` (what ``ketos train`` does to every spec)."""
        spec = self.spec
        idx = sum(1 for _ in _leaves(self.blocks))
        new_spec = f"[{spec[1:-1]} O{{O_{idx}}}1c{n_out}]"
        _, blocks = parse_spec(new_spec)
        blk = blocks[-1]
        m, c, h = _build_block(blk, *self.output_shape)
        init_weights(m)
        self.nn.add_module(blk.name, m)
        self.blocks.append(blk)
        self.output_shape = (c, h)


def _leaves(blocks: list[Block]):
    for b in blocks:
        if b.kind in ("series", "parallel"):
            yield from _leaves(b.children)
        else:
            yield b


def check_trainable(spec: str) -> None:
    """Refuses a spec that parses but cannot be trained with CTC, before any data is read.

    The network (plus the output layer ``ketos train`` appends) runs once on a blank line of
    :data:`PROBE_WIDTH` frames (of each of :data:`PROBE_HEIGHTS` for a variable-height input); it must run and
    leave an output of height 1. A spec that already ends in an output layer is kept, as kraken keeps it:
    the appended layer follows it, which a warning says.
    """
    net = build_model(spec, init=False)
    if net.blocks and net.blocks[-1].kind == "output":
        logger.warning(
            "the spec ends in an output layer (%s); ketos train appends its own O1c layer after it, as kraken "
            "does, so the network will have two (drop yours to get one)",
            net.blocks[-1].source,
        )
    net.append_output(2)
    b, c, h, w = net.input
    net.eval()
    for height in (h,) if h else PROBE_HEIGHTS:
        x = torch.zeros(1, c, height, w or PROBE_WIDTH)
        try:
            with torch.inference_mode():
                o, _ = net(x, torch.tensor([x.shape[3]]))
        except (RuntimeError, ValueError, IndexError) as exc:
            msg = " ".join(str(exc).split())[:200]
            raise SpecError(f"VGSL spec {spec!r} cannot run on a line of height {height}: {msg}") from None
        if o.dim() != 4 or o.shape[2] != 1:
            got = o.shape[2] if o.dim() == 4 else "?"
            raise SpecError(
                f"VGSL spec {spec!r} leaves an output of height {got} on a line of height {height}, CTC needs 1: "
                f"fold the height into the channels (e.g. S1(1x0)1,3) before the recurrent layers"
            )


def build_model(
    spec: str, codec: Codec | dict | None = None, *, init: bool = True, **metadata: Any
) -> RecognitionModel:
    """Builds a freshly initialised network from a (possibly named) VGSL spec.

    ``init=False`` skips kraken's initialisation (orthogonal LSTM weights take seconds of QR decompositions)
    for a network that is only built to receive loaded weights; torch's cheap default initialisation remains.
    """
    return RecognitionModel(spec, codec, init=init, **metadata)
