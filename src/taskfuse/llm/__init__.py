"""Causal LMs end to end: the LLM benchmark's tasks, base model, LoRA expert zoo and evaluation."""
