"""Algorithms that are not per-tensor: they read data to learn or rewrite a Plan, then the executor writes it."""
