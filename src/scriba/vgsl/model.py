"""Recognition networks built from VGSL specs, with kraken's module names and metadata."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn as tnn

from scriba.codec import Codec
from scriba.errors import SpecError
from scriba.vgsl import layers as L
from scriba.vgsl.parser import Block, named_spec, parse_spec

# CPU inference runs big batches in slices of about this many input values. The first convolution's output
# is tens of times larger than its input, and activations over glibc's 32 MiB mmap threshold come back as
# fresh pages on every call: the page faults then cost more than the arithmetic (-B 16: 6.5 -> 4.2 ms/line).
_SLICE_VALUES = 1 << 18

DEFAULT_METADATA: dict[str, Any] = {
    "accuracy": [],
    "metrics": [],
    "seg_type": None,
    "one_channel_mode": None,
    "model_type": ["recognition"],
    "legacy_polygons": False,
}


def _build_block(blk: Block, c: int, h: int) -> tuple[tnn.Module, int, int]:
    p = blk.params
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
    except (ValueError, RuntimeError) as exc:
        raise SpecError(f"VGSL block {blk.source!r} cannot be built on input of {c} channels, height {h}: {exc}") from None
    if h and h2 <= 0:
        raise SpecError(f"VGSL block {blk.source!r} reduces the height {h} to nothing")
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


def build_model(
    spec: str, codec: Codec | dict | None = None, *, init: bool = True, **metadata: Any
) -> RecognitionModel:
    """Builds a freshly initialised network from a (possibly named) VGSL spec.

    ``init=False`` skips kraken's initialisation (orthogonal LSTM weights take seconds of QR decompositions)
    for a network that is only built to receive loaded weights; torch's cheap default initialisation remains.
    """
    return RecognitionModel(spec, codec, init=init, **metadata)
