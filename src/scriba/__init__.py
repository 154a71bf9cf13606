"""scriba: train, fine-tune, pretrain and evaluate text-line recognition models, compatible with kraken 7.

The top-level names are loaded lazily so that ``import scriba`` (and ``ketos --help``) stays fast:
``train``, ``pretrain``, ``evaluate`` and ``compile_dataset`` (the jobs behind ``ketos train``, ``pretrain``,
``test`` and ``compile``; each takes the configuration objects of :mod:`scriba.config`, where data may be files,
globs or manifests), ``load_model`` and ``Recognizer`` (predictions on line images, pages and datasets).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": ("scriba.weights.load", "load_model"),
    "train": ("scriba.jobs.train.job", "train"),
    "evaluate": ("scriba.jobs.evaluate.job", "evaluate"),
    "pretrain": ("scriba.jobs.pretrain.job", "pretrain"),
    "compile_dataset": ("scriba.jobs.compile", "compile_dataset"),
    "Recognizer": ("scriba.recognizer", "Recognizer"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'scriba' has no attribute {name!r}")
