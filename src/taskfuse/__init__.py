"""taskfuse: merge task-specific fine-tunes into one model."""
__version__ = "0.1.0"

from .api import merge, plan  # noqa: E402
from .errors import (  # noqa: E402
    CheckpointError, HubUnavailableError, IncompatibleInputsError, NonFiniteInputError, OutputExistsError, SpecError,
    TaskfuseError, UnknownMethodError,
)
from .methods import Inputs, all_methods, get_method  # noqa: E402

__all__ = [
    "merge", "plan", "Inputs", "all_methods", "get_method", "TaskfuseError", "SpecError", "UnknownMethodError",
    "IncompatibleInputsError", "CheckpointError", "HubUnavailableError", "NonFiniteInputError", "OutputExistsError",
]
