"""scriba training checkpoints (``.ckpt``): plain Lightning checkpoints with a ``scriba`` entry.

They hold only plain Python types and tensors, so ``torch.load(weights_only=True)`` reads them:
``scriba = {"vgsl": named spec, "codec": c2l, "metadata": {...}, ...}`` and the network in ``state_dict``
under ``net.``.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from scriba.codec import Codec
from scriba.errors import CodecError, ModelError, ScribaError
from scriba.vgsl.model import RecognitionModel, build_model
from scriba.weights.safetensors_io import load_state

PREFIX = "net."


def checkpoint_entry(model: RecognitionModel, **extra: Any) -> dict[str, Any]:
    """The ``scriba`` entry describing ``model`` (training adds ``train_config``, ``global_config``, ``data``)."""
    return {
        "vgsl": model.spec,
        "codec": model.codec.to_json() if model.codec is not None else None,
        "metadata": dict(model.metadata),
        **extra,
    }


def read_checkpoint_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = str(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError("file not found", path=path) from None
    except Exception as exc:  # torch.load fails with many exception types on foreign bytes
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"not a scriba checkpoint ({msg[:200]})", path=path) from None
    if not isinstance(ckpt, dict):
        raise ModelError("not a scriba checkpoint (no dictionary inside)", path=path)
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], path: str = "<checkpoint>") -> RecognitionModel:
    entry = ckpt.get("scriba")
    if not isinstance(entry, dict) or "vgsl" not in entry:
        raise ModelError("checkpoint has no scriba model description (not written by scriba?)", path=path)
    try:
        codec = Codec(entry["codec"]) if entry.get("codec") else None
    except CodecError as exc:
        raise ModelError(f"invalid codec in checkpoint: {exc}", path=path) from None
    try:
        model = build_model(entry["vgsl"], codec, init=False, **dict(entry.get("metadata") or {}))
    except ScribaError as exc:
        raise ModelError(f"cannot build network: {exc}", path=path) from None
    sd = ckpt.get("state_dict") or {}
    state = {k[len(PREFIX) :]: v for k, v in sd.items() if k.startswith(PREFIX)}
    load_state(model, state, path)
    return model


def read_checkpoint(path: str | os.PathLike[str]) -> RecognitionModel:
    """The network stored in a scriba checkpoint."""
    return model_from_checkpoint(read_checkpoint_dict(path), str(path))
