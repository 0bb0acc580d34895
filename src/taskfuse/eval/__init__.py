"""Evaluation: tasks built from real offline text, the accuracy harness and reports.

Independent of how a model was made: it judges an encoder directory with per-task heads.
"""
