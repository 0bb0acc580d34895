"""The streaming executor: read -> compute (float32) -> cast -> write, one tensor at a time."""
from .executor import MergeResult, execute

__all__ = ["MergeResult", "execute"]
