"""Planning: a MergeSpec plus checkpoint headers becomes an inspectable Plan of per-tensor jobs."""
from .plan import Plan, Source, TensorJob
from .planner import build_plan

__all__ = ["Plan", "Source", "TensorJob", "build_plan"]
