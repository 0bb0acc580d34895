"""Routed composition of a LoRA library: each token (or input) gets its own mixture of the adapters' updates."""
