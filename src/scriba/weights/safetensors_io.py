"""kraken 7 safetensors files: tensors named ``<uuid>.nn.<layer>.<param>``, metadata under ``kraken_meta``."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from typing import Any

import torch

from scriba.codec import Codec
from scriba.errors import CodecError, ModelError, ScribaError
from scriba.vgsl.model import RecognitionModel, build_model
from scriba.weights.atomic import atomic_path

KRAKEN_MIN_VERSION = "5.0.0"
MODEL_CLASS = "TorchVGSLModel"
# keys that are stored outside user metadata or rebuilt from the network
_RESERVED = {"_kraken_min_version", "_tasks", "_model", "codec", "vgsl"}


def model_metadata(model: RecognitionModel) -> dict[str, Any]:
    """The per-model ``kraken_meta`` entry, keys in the order kraken writes them."""
    md = dict(model.metadata)
    tasks = md.get("model_type") or ["recognition"]
    if isinstance(tasks, str):
        tasks = [tasks]
    meta: dict[str, Any] = {"_kraken_min_version": KRAKEN_MIN_VERSION, "_tasks": list(tasks), "_model": MODEL_CLASS}
    for key in ("accuracy", "metrics", "seg_type", "one_channel_mode"):
        meta[key] = md.pop(key, [] if key in ("accuracy", "metrics") else None)
    md.pop("model_type", None)
    meta["model_type"] = list(tasks)
    meta["legacy_polygons"] = bool(md.pop("legacy_polygons", False))
    meta["codec"] = model.codec.to_json() if model.codec is not None else {}
    for key, value in md.items():
        if key not in _RESERVED:
            meta[key] = value
    meta["vgsl"] = model.spec
    return meta


def write_safetensors(models: Sequence[RecognitionModel], path: str | os.PathLike[str]) -> None:
    """Writes one or several models into one file (kraken's layout); nothing appears on failure."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for model in models:
        key = str(uuid.uuid4())
        for name, t in model.state_dict().items():
            # clone: LSTM parameters share flattened storage, which safetensors refuses to write
            tensors[f"{key}.{name}"] = t.detach().cpu().contiguous().clone()
        meta[key] = model_metadata(model)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"kraken_meta": json.dumps(meta)})


def _model_from_meta(meta: dict[str, Any], state: dict[str, torch.Tensor], path: str) -> RecognitionModel:
    spec = meta.get("vgsl")
    if not isinstance(spec, str):
        raise ModelError("model entry has no VGSL spec", path=path)
    codec_def = meta.get("codec")
    if isinstance(codec_def, str):
        # some writers stored the codec as a JSON string
        try:
            codec_def = json.loads(codec_def)
        except json.JSONDecodeError:
            raise ModelError("codec metadata is not valid JSON", path=path) from None
    try:
        codec = Codec(codec_def) if codec_def else None
    except CodecError as exc:
        raise ModelError(f"invalid codec: {exc}", path=path) from None
    md = {k: v for k, v in meta.items() if k not in _RESERVED}
    md["model_type"] = meta.get("_tasks") or md.get("model_type") or []
    try:
        model = build_model(spec, codec, init=False, **md)
    except ScribaError as exc:
        raise ModelError(f"cannot build network: {exc}", path=path) from None
    load_state(model, state, path)
    return model


def load_state(model: RecognitionModel, state: dict[str, torch.Tensor], path: str) -> None:
    """Strict state dict loading, casting fp16/mixed tensors to the model's fp32."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ModelError(f"weights do not match the network: missing {missing[:4]}, unexpected {extra[:4]}", path=path)
    for k, t in state.items():
        if tuple(t.shape) != tuple(own[k].shape):
            raise ModelError(f"tensor {k} has shape {tuple(t.shape)}, network expects {tuple(own[k].shape)}", path=path)
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def read_safetensors(path: str | os.PathLike[str], tasks: Sequence[str] | None = ("recognition",)) -> list[RecognitionModel]:
    """Reads every model in the file (filtered by task; models without tasks are kept only if none match)."""
    from safetensors import SafetensorError, safe_open

    path = str(path)
    try:
        with safe_open(path, framework="pt") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"not a readable safetensors file ({str(exc).splitlines()[0]})", path=path) from None
    raw = header.get("kraken_meta")
    if raw is None:
        raise ModelError("safetensors file has no kraken_meta metadata (not a kraken/scriba model)", path=path)
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise ModelError("kraken_meta metadata is not valid JSON", path=path) from None
    if not isinstance(meta, dict):
        raise ModelError("kraken_meta metadata is not an object", path=path)
    matched: list[RecognitionModel] = []
    untyped: list[RecognitionModel] = []
    for key, entry in meta.items():
        if not isinstance(entry, dict) or entry.get("_model", MODEL_CLASS) != MODEL_CLASS:
            continue
        entry_tasks = entry.get("_tasks") or []
        if not isinstance(entry_tasks, list):
            raise ModelError(f"model {key}: invalid _tasks {entry_tasks!r}", path=path)
        prefix = f"{key}."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if tasks is not None and entry_tasks and not set(entry_tasks) & set(tasks):
            continue
        model = _model_from_meta(entry, state, path)
        (matched if entry_tasks else untyped).append(model)
    return matched or untyped
