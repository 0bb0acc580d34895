"""Reading checkpoints lazily and writing merged ones atomically."""
