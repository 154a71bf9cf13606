"""VGSL network specifications: parsing, layers and the recognition model."""

from scriba.vgsl.model import RecognitionModel, build_model, init_weights
from scriba.vgsl.parser import Block, named_spec, parse_spec

__all__ = ["Block", "RecognitionModel", "build_model", "init_weights", "named_spec", "parse_spec"]
