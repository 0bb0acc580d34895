"""taskfuse: merge task-specific fine-tunes into one model.

The public names load on first use (PEP 562), so importing the package is free: the console script
(cli/launch.py) sets up how the heavy imports (torch, pydantic) run before any of them happens.
`from taskfuse import merge` and `taskfuse.plan(spec)` work as usual.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import plan as _plan_subpackage  # noqa: F401  (free: see plan/__init__.py)

# Importing a subpackage binds its name here; `plan` is the API function, so the subpackage is loaded first and
# its binding dropped: later imports of taskfuse.plan.* find it in sys.modules and never bind it again.
del plan  # noqa: F821

__version__ = "0.1.0"

_PUBLIC = {
    "merge": ".api", "plan": ".api", "merge_stages": ".api",
    "Inputs": ".methods", "all_methods": ".methods", "get_method": ".methods",
    **{name: ".errors" for name in (
        "TaskfuseError", "SpecError", "UnknownMethodError", "IncompatibleInputsError", "CheckpointError",
        "HubUnavailableError", "NonFiniteInputError", "OutputExistsError")},
}
__all__ = list(_PUBLIC)

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ loads them
    from .api import merge, merge_stages, plan  # noqa: F811
    from .errors import (
        CheckpointError, HubUnavailableError, IncompatibleInputsError, NonFiniteInputError, OutputExistsError,
        SpecError, TaskfuseError, UnknownMethodError,
    )
    from .methods import Inputs, all_methods, get_method


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'taskfuse' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
