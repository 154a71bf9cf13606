"""kraken CoreML ``.mlmodel`` files, read and written through ``coremltools.proto`` (an optional dependency).

The network is rebuilt from the ``vgsl`` metadata and the weights are taken from the protobuf layers by
name: ``<name>_conv`` (convolution), ``<name>``/``<name>_transposed`` (LSTMs, CoreML gate order I,F,O,G
with one bias that goes to ``bias_hh``), ``<name>_lin`` (inner product) and custom ``groupnorm`` layers.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scriba.codec import Codec
from scriba.errors import CodecError, ModelError, ScribaError, read_bytes
from scriba.vgsl import layers as L
from scriba.vgsl.model import RecognitionModel, build_model
from scriba.weights.atomic import atomic_path
from scriba.weights.safetensors_io import load_state

_GATES = ("inputGate", "forgetGate", "blockInput", "outputGate")  # torch order i, f, g, o
# CoreML layer kind -> (suffix of its layer name, attribute of our layer holding weight and bias)
_DENSE = {"convolution": ("_conv", "co"), "innerProduct": ("_lin", "lin")}


_PROTO_ALIAS = "_scriba_coremltools_proto"


def _proto() -> Any:
    """coremltools' generated protobuf classes, without importing coremltools itself.

    ``import coremltools.proto`` first runs ``coremltools/__init__``, which loads its converters (about 2 s,
    most of ``ketos test``'s start-up); the ``*_pb2`` modules only need protobuf. They are loaded from
    coremltools' ``proto`` folder under a package of our own; protobuf accepts the same ``.proto`` files again
    should coremltools itself be imported later.
    """
    mod = sys.modules.get(f"{_PROTO_ALIAS}.Model_pb2")
    if mod is not None:
        return mod
    try:
        spec = importlib.util.find_spec("coremltools")
    except (ImportError, ValueError):
        spec = None
    folder = Path(spec.submodule_search_locations[0]) / "proto" if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / "Model_pb2.py").is_file():
        raise ModelError("reading or writing CoreML models needs coremltools (pip install 'scriba[coreml]')")
    pkg = types.ModuleType(_PROTO_ALIAS)
    pkg.__path__ = [str(folder)]
    sys.modules.setdefault(_PROTO_ALIAS, pkg)
    try:
        return importlib.import_module(f"{_PROTO_ALIAS}.Model_pb2")
    except ImportError as exc:
        raise ModelError(f"cannot load coremltools' protobuf classes: {exc}") from None


def _array(wp: Any) -> np.ndarray:
    if len(wp.floatValue):
        return np.asarray(wp.floatValue, dtype=np.float32)
    if len(wp.float16Value):
        return np.frombuffer(wp.float16Value, dtype=np.float16).astype(np.float32)
    if len(wp.rawValue):
        return np.frombuffer(wp.rawValue, dtype=np.float32).copy()
    return np.zeros(0, dtype=np.float32)


def _leaf_paths(model: RecognitionModel) -> dict[str, str]:
    """Block name -> module path (``nn.C_0`` or ``nn.<series>.C_0`` for nested blocks)."""
    paths: dict[str, str] = {}
    for path, _ in model.nn.named_modules(prefix="nn"):
        paths.setdefault(path.rsplit(".", 1)[-1], path)
    return paths


def _state_from_layers(model: RecognitionModel, layers: Any, path: str) -> dict[str, torch.Tensor]:
    own = model.state_dict()
    paths = _leaf_paths(model)
    state: dict[str, torch.Tensor] = {}

    def put(key: str, arr: np.ndarray) -> None:
        if key not in own:
            raise ModelError(f"CoreML layer weights {key} do not belong to the network", path=path)
        if arr.size != own[key].numel():
            raise ModelError(f"CoreML weights for {key} have {arr.size} values, network expects {own[key].numel()}",
                             path=path)
        state[key] = torch.from_numpy(arr.reshape(tuple(own[key].shape)))

    for layer in layers:
        kind = layer.WhichOneof("layer")
        name = layer.name
        if kind in _DENSE and name.endswith(_DENSE[kind][0]):
            suffix, attr = _DENSE[kind]
            base = paths.get(name[: -len(suffix)])
            if base is None:
                continue
            params = getattr(layer, kind)
            put(f"{base}.{attr}.weight", _array(params.weights))
            if params.hasBias:
                put(f"{base}.{attr}.bias", _array(params.bias))
        elif kind in ("uniDirectionalLSTM", "biDirectionalLSTM"):
            base = paths.get(name[: -len("_transposed")] if name.endswith("_transposed") else name)
            if base is None:
                continue
            params = layer.biDirectionalLSTM.weightParams if kind == "biDirectionalLSTM" else [
                layer.uniDirectionalLSTM.weightParams
            ]
            for suffix, wp in zip(("", "_reverse"), params):
                w_ih = np.concatenate([_array(getattr(wp, f"{g}WeightMatrix")) for g in _GATES])
                w_hh = np.concatenate([_array(getattr(wp, f"{g}RecursionMatrix")) for g in _GATES])
                bias = np.concatenate([_array(getattr(wp, f"{g}BiasVector")) for g in _GATES])
                put(f"{base}.layer.weight_ih_l0{suffix}", w_ih)
                put(f"{base}.layer.weight_hh_l0{suffix}", w_hh)
                if bias.size == 0:
                    bias = np.zeros(own[f"{base}.layer.bias_hh_l0{suffix}"].numel(), dtype=np.float32)
                put(f"{base}.layer.bias_hh_l0{suffix}", bias)
                put(f"{base}.layer.bias_ih_l0{suffix}", np.zeros_like(bias))
        elif kind == "custom" and layer.custom.className == "groupnorm":
            base = paths.get(name)
            if base is None:
                continue
            put(f"{base}.layer.weight", _array(layer.custom.weights[0]))
            put(f"{base}.layer.bias", _array(layer.custom.weights[1]))
    return state


def read_coreml(path: str | os.PathLike[str]) -> RecognitionModel:
    """Reads a kraken CoreML recognition model (old files without ``kraken_meta`` count as legacy ones)."""
    pb = _proto()
    path = str(path)
    data = read_bytes(path, ModelError, "model")
    spec = pb.Model()
    try:
        spec.ParseFromString(data)
    except Exception:  # protobuf raises DecodeError (and sometimes others) on foreign bytes
        raise ModelError("not a CoreML model (protobuf does not parse)", path=path) from None
    if spec.WhichOneof("Type") != "neuralNetwork":
        raise ModelError("not a kraken CoreML model (no neural network in the file)", path=path)
    ud = dict(spec.description.metadata.userDefined)
    try:
        meta = json.loads(ud["kraken_meta"]) if "kraken_meta" in ud else {}
    except json.JSONDecodeError:
        raise ModelError("kraken_meta metadata is not valid JSON", path=path) from None
    legacy = "kraken_meta" not in ud
    vgsl = ud.get("vgsl") or meta.get("vgsl")
    if not vgsl:
        raise ModelError("CoreML model has no VGSL spec in its metadata (not a kraken model)", path=path)
    try:
        codec = Codec(json.loads(ud["codec"])) if "codec" in ud else None
    except (json.JSONDecodeError, CodecError) as exc:
        raise ModelError(f"invalid codec metadata: {exc}", path=path) from None
    md: dict[str, Any] = {k: v for k, v in meta.items() if k not in ("codec", "vgsl")}
    mt = md.get("model_type")
    if isinstance(mt, str):
        md["model_type"] = [mt]
    elif not mt:
        md["model_type"] = ["recognition"]
    if md["model_type"] != ["recognition"] and "recognition" not in md["model_type"]:
        raise ModelError(f"not a recognition model (model type {md['model_type']})", path=path)
    # files from before the legacy_polygons flag were trained on legacy polygon extraction
    md.setdefault("legacy_polygons", True)
    if legacy:
        md.setdefault("seg_type", None)
    try:
        model = build_model(vgsl, codec, init=False, **md)
    except ScribaError as exc:
        raise ModelError(f"cannot build network: {exc}", path=path) from None
    load_state(model, _state_from_layers(model, spec.neuralNetwork.layers, path), path)
    return model


def _np_list(t: torch.Tensor) -> list[float]:
    return t.detach().cpu().float().reshape(-1).tolist()


def write_coreml(model: RecognitionModel, path: str | os.PathLike[str]) -> None:
    """Writes one model as kraken-compatible CoreML (spec v4 neural network, kraken's layer names)."""
    pb = _proto()
    spec = pb.Model()
    spec.specificationVersion = 4
    b, c, h, w = model.input
    inp = spec.description.input.add()
    inp.name = "input"
    inp.type.multiArrayType.shape.extend([b, c, h, w])
    inp.type.multiArrayType.dataType = pb.ArrayFeatureType.DOUBLE
    out = spec.description.output.add()
    out.name = "output"
    out.type.multiArrayType.shape.extend([1, model.output_shape[0], 1, 1])
    out.type.multiArrayType.dataType = pb.ArrayFeatureType.DOUBLE
    md = spec.description.metadata
    md.shortDescription = "kraken model"
    meta = {k: v for k, v in model.metadata.items()}
    mt = meta.get("model_type") or ["recognition"]
    meta["model_type"] = mt[0] if isinstance(mt, list) and mt else (mt if isinstance(mt, str) else "unknown")
    md.userDefined["codec"] = json.dumps(model.codec.to_json() if model.codec else {})
    md.userDefined["vgsl"] = model.spec
    md.userDefined["kraken_meta"] = json.dumps(meta)
    net = spec.neuralNetwork
    cur = "input"

    def custom(name: str, cls: str, params: dict[str, int | float]) -> Any:
        nonlocal cur
        layer = net.layers.add()
        layer.name = name
        layer.input.append(cur)
        layer.output.append(name)
        layer.custom.className = cls
        for k, v in params.items():
            if isinstance(v, float):
                layer.custom.parameters[k].doubleValue = v
            else:
                layer.custom.parameters[k].intValue = int(v)
        cur = name
        return layer

    def emit(name: str, m: Any) -> None:
        nonlocal cur
        if isinstance(m, (L.Series,)):
            for child_name, child in m.named_children():
                emit(child_name, child)
            return
        if isinstance(m, L.ActConv2D):
            layer = net.layers.add()
            layer.name = f"{name}_conv"
            layer.input.append(cur)
            layer.output.append(layer.name)
            conv = layer.convolution
            conv.outputChannels = m.out_channels
            conv.kernelChannels = m.in_channels
            conv.kernelSize.extend(m.kernel_size)
            conv.stride.extend(m.stride)
            conv.dilationFactor.extend(m.dilation)
            conv.isDeconvolution = m.transposed
            conv.same.asymmetryMode = 0
            conv.hasBias = True
            conv.weights.floatValue.extend(_np_list(m.co.weight))
            conv.bias.floatValue.extend(_np_list(m.co.bias))  # type: ignore[arg-type]  # VGSL convolutions have biases
            act = net.layers.add()
            act.name = f"{name}_act"
            act.input.append(layer.name)
            act.output.append(name)
            if m.nl == "s":
                act.activation.sigmoid.SetInParent()
            elif m.nl == "t":
                act.activation.tanh.SetInParent()
            elif m.nl == "r":
                act.activation.ReLU.SetInParent()
            elif m.nl == "lr":
                act.activation.leakyReLU.alpha = 0.01
            else:
                act.activation.linear.alpha = 1.0
            cur = name
        elif isinstance(m, L.LinSoftmax):
            layer = net.layers.add()
            layer.name = f"{name}_lin"
            layer.input.append(cur)
            layer.output.append(name)
            ip = layer.innerProduct
            ip.inputChannels = m.lin.in_features
            ip.outputChannels = m.output_size
            ip.hasBias = True
            ip.weights.floatValue.extend(_np_list(m.lin.weight))
            ip.bias.floatValue.extend(_np_list(m.lin.bias))
            cur = name
        elif isinstance(m, L.TransposedSummarizingRNN):
            if m.cell != "L":
                raise ModelError(f"CoreML export supports LSTM layers only, not {name}")
            layer = net.layers.add()
            layer.name = f"{name}_transposed" if m.transpose else name
            layer.input.append(cur)
            layer.output.append(name)
            lstm = layer.biDirectionalLSTM if m.bidi else layer.uniDirectionalLSTM
            lstm.inputVectorSize = m.input_size
            lstm.outputVectorSize = m.hidden_size
            lstm.params.sequenceOutput = not m.summarize
            lstm.params.hasBiasVectors = True
            lstm.params.cellClipThreshold = 50000
            dirs = ("", "_reverse") if m.bidi else ("",)
            for suffix in dirs:
                wp = lstm.weightParams.add() if m.bidi else lstm.weightParams
                hs = m.hidden_size
                p = dict(m.layer.named_parameters())
                w_ih, w_hh = p[f"weight_ih_l0{suffix}"], p[f"weight_hh_l0{suffix}"]
                bias = p[f"bias_ih_l0{suffix}"] + p[f"bias_hh_l0{suffix}"]
                for i, g in enumerate(_GATES):
                    getattr(wp, f"{g}WeightMatrix").floatValue.extend(_np_list(w_ih[i * hs : (i + 1) * hs]))
                    getattr(wp, f"{g}RecursionMatrix").floatValue.extend(_np_list(w_hh[i * hs : (i + 1) * hs]))
                    getattr(wp, f"{g}BiasVector").floatValue.extend(_np_list(bias[i * hs : (i + 1) * hs]))
            cur = name
        elif isinstance(m, L.MaxPool):
            layer = net.layers.add()
            layer.name = name
            layer.input.append(cur)
            layer.output.append(name)
            pool = layer.pooling
            pool.type = pool.MAX
            pool.kernelSize.extend(m.kernel_size)
            pool.stride.extend(m.stride)
            pool.same.asymmetryMode = 0
            cur = name
        elif isinstance(m, L.GroupNorm):
            layer = custom(name, "groupnorm", {"in_channels": m.channels, "num_groups": m.groups})
            layer.custom.weights.add().floatValue.extend(_np_list(m.layer.weight))
            layer.custom.weights.add().floatValue.extend(_np_list(m.layer.bias))
        elif isinstance(m, L.Reshape):
            custom(name, "reshape", {"src_dim": m.src_dim, "part_a": m.part_a, "part_b": m.part_b,
                                     "high": m.high, "low": m.low})
        elif isinstance(m, L.Dropout):
            custom(name, "dropout", {"p": float(m.p), "dim": m.dim})
        elif isinstance(m, L.Addition):
            custom(name, "addition", {"dim": m.dim, "chunk_size": m.chunk})
        elif isinstance(m, L.Identity):
            custom(name, "identity", {})
        else:
            raise ModelError(f"layer {name} ({type(m).__name__}) cannot be written as CoreML")

    for name, m in model.nn.named_children():
        emit(name, m)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(spec.SerializeToString())
