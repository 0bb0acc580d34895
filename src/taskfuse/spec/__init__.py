"""Merge specs: taskfuse's own strict YAML, and mergekit YAML translated into it."""
from .load import load_spec, parse_spec
from .model import MergeSpec, ModelEntry, Override, SliceEntry, TensorRules

__all__ = ["MergeSpec", "ModelEntry", "Override", "SliceEntry", "TensorRules", "load_spec", "parse_spec"]
