"""Writing weights files and ``ketos convert``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from scriba.errors import UsageError
from scriba.vgsl.model import RecognitionModel

WEIGHTS_FORMATS = ("safetensors", "coreml")


def weights_path(path: str | os.PathLike[str], weights_format: str) -> Path:
    """The file name a format writes to (CoreML files always end in ``.mlmodel``)."""
    p = Path(path)
    if weights_format == "coreml" and p.suffix != ".mlmodel":
        return p.with_suffix(".mlmodel")
    return p


def save_weights(
    models: RecognitionModel | Sequence[RecognitionModel], path: str | os.PathLike[str], weights_format: str = "safetensors"
) -> Path:
    """Writes one model (or several, safetensors only) to ``path``; returns the path actually written."""
    if isinstance(models, RecognitionModel):
        models = [models]
    if weights_format not in WEIGHTS_FORMATS:
        raise UsageError(f"unknown weights format {weights_format!r} (choose from {', '.join(WEIGHTS_FORMATS)})")
    out = weights_path(path, weights_format)
    if weights_format == "coreml":
        if len(models) != 1:
            raise UsageError(f"CoreML files hold exactly one model, got {len(models)}")
        from scriba.weights.coreml_io import write_coreml

        write_coreml(models[0], out)
    else:
        from scriba.weights.safetensors_io import write_safetensors

        write_safetensors(list(models), out)
    return out


def convert(
    inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], weights_format: str = "safetensors"
) -> Path:
    """Converts checkpoints and weights files into one weights file (``ketos convert``)."""
    from scriba.weights.load import load_models

    if not inputs:
        raise UsageError("No checkpoints to convert were provided.")
    models: list[RecognitionModel] = []
    for path in inputs:
        models.extend(load_models(path))
    return save_weights(models, output, weights_format)
