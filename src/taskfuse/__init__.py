"""taskfuse: merge task-specific fine-tunes into one model."""
__version__ = "0.1.0"
