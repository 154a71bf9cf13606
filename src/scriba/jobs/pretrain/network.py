"""Preparing a recognition network for pretraining: where to cut it, and the dummy output layer.

The network is cut before its first recurrent layer: everything before is the convolutional front
(``features``), everything from there up to (excluding) the output layer is the context ``encoder``. The
output layer takes no part in pretraining; a network without one gets a dummy 2-way layer and the codec
``{' ': [1]}`` so that the weights written at the end are a complete recognition model, which
``ketos train --load ... --resize new`` adapts to real data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from scriba.codec import Codec
from scriba.errors import SpecError
from scriba.vgsl.layers import LinSoftmax
from scriba.vgsl.model import RecognitionModel, build_model

DUMMY_CODEC = {" ": [1]}


@dataclass
class Split:
    """Indices into ``net.nn``: features are ``[0, start)``, the encoder is ``[start, stop)``."""

    start: int
    stop: int
    feature_dim: int  # channels entering the encoder (the mask embedding's size)
    context_dim: int  # channels leaving the encoder (the projected targets' size)


def _is_recurrent(layer: nn.Module) -> bool:
    return any(isinstance(m, nn.RNNBase) for m in layer.modules())


def _has_output_layer(net: RecognitionModel) -> bool:
    return len(net.nn) > 0 and isinstance(net.nn[-1], LinSoftmax)


def build_pretrain_model(spec: str, **metadata: Any) -> RecognitionModel:
    """A fresh network from ``spec`` with the dummy output layer (unless the spec ends in an output layer)."""
    return prepare_loaded(build_model(spec, None, **metadata))


def prepare_loaded(net: RecognitionModel) -> RecognitionModel:
    """A loaded network ready for pretraining: a dummy output layer added when it has none.

    A loaded network that has an output layer and codec keeps both (they are not trained here), so
    pretraining a trained model further does not throw its classifier away.
    """
    if not _has_output_layer(net):
        net.append_output(2)
        net.codec = Codec(DUMMY_CODEC)
    elif net.codec is None:
        net.resize_output(2)
        net.codec = Codec(DUMMY_CODEC)
    return net


def find_split(net: RecognitionModel) -> Split:
    """Where ``net`` is cut, and the channel counts on both sides of the encoder.

    Raises :class:`SpecError` when the network has no recurrent layer, none after some convolutional front,
    or a front whose output is not one pixel high (the mask works on a sequence of frames).
    """
    layers: list[Any] = list(net.nn)
    start = next((i for i, m in enumerate(layers) if _is_recurrent(m)), None)
    if start is None:
        raise SpecError(f"pretraining needs a recurrent layer (L or G block) after the convolutions: {net.spec}")
    if start == 0:
        raise SpecError(f"pretraining needs convolutional layers before the first recurrent layer: {net.spec}")
    stop = len(layers) - 1 if _has_output_layer(net) else len(layers)
    _, c, h, w = net.input
    if h == 1 and w == 0 and c > 3:  # channel-height input: the line's height arrives as channels
        ch, hh = c, 1
    else:
        ch, hh = c, h
    for m in layers[:start]:
        ch, hh = m.out_shape(ch, hh)
    if hh not in (0, 1):
        raise SpecError(
            f"pretraining needs the features before the first recurrent layer to be 1 high, they are {hh} high: "
            f"{net.spec} (fold the height with a reshape such as S1(1x0)1,3)"
        )
    feature_dim = ch
    for m in layers[start:stop]:
        ch, hh = m.out_shape(ch, hh)
    return Split(start=start, stop=stop, feature_dim=feature_dim, context_dim=ch)
