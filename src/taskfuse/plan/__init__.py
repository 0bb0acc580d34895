"""Planning: a MergeSpec plus checkpoint headers becomes an inspectable Plan of per-tensor jobs.

plan.py holds the Plan, TensorJob and Source records, planner.py builds them (build_plan). Nothing is imported
here, so that importing this subpackage is free (taskfuse/__init__.py relies on that).
"""
