"""Public testing helpers: tiny real checkpoints and the method conformance kit."""
