"""Weights files: kraken 7 safetensors, kraken CoreML, scriba checkpoints; loading and conversion."""

from scriba.weights.convert import convert, save_weights, weights_path
from scriba.weights.load import load_model, load_models

__all__ = ["convert", "load_model", "load_models", "save_weights", "weights_path"]
