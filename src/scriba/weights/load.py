"""One entry point for every model file: ``load_model(path)``."""

from __future__ import annotations

import os
from pathlib import Path

from scriba.errors import ModelError, read_bytes
from scriba.vgsl.model import RecognitionModel

_ZIP_MAGIC = b"PK\x03\x04"


def _sniff(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".safetensors", ".mlmodel", ".ckpt"):
        return suffix
    head = read_bytes(str(path), ModelError, "model", 16)
    if head.startswith(_ZIP_MAGIC):
        return ".ckpt"
    if len(head) >= 9 and head[8:9] == b"{":
        return ".safetensors"
    return ".mlmodel"


def load_models(path: str | os.PathLike[str]) -> list[RecognitionModel]:
    """Every recognition model in a file (safetensors files may hold several)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError("model file not found", path=str(path))
    kind = _sniff(p)
    if kind == ".safetensors":
        from scriba.weights.safetensors_io import read_safetensors

        models = read_safetensors(p)
    elif kind == ".ckpt":
        from scriba.weights.checkpoint import read_checkpoint

        models = [read_checkpoint(p)]
    else:
        from scriba.weights.coreml_io import read_coreml

        models = [read_coreml(p)]
    if not models:
        raise ModelError("file holds no recognition model", path=str(path))
    return models


def load_model(path: str | os.PathLike[str]) -> RecognitionModel:
    """Loads a recognition model from ``.safetensors`` (kraken 7), ``.mlmodel`` (kraken CoreML) or ``.ckpt``.

    >>> from scriba import load_model
    >>> model = load_model(weights)  # e.g. the best_*.safetensors that scriba.train wrote
    >>> model.spec.startswith("[1,32,0,1 "), model.seg_type, len(model.codec) > 10
    (True, 'bbox', True)
    """
    return load_models(path)[0]
