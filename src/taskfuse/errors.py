"""One exception tree for everything taskfuse rejects.

Every message names what was wrong (model, tensor, key) and how to fix it, so a user never has to read a traceback.
"""
from __future__ import annotations

import re


class TaskfuseError(Exception):
    """Base of every error taskfuse raises on purpose."""


class SpecError(TaskfuseError, ValueError):
    """The merge spec (YAML, mergekit YAML or Python) is malformed or asks for something unsupported."""


class UnknownMethodError(SpecError, KeyError):
    """A method name that is not registered; the message lists the closest registered names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class IncompatibleInputsError(TaskfuseError, ValueError):
    """Checkpoints that cannot be merged together: shapes, vocabularies or tensor sets disagree."""


class CheckpointError(TaskfuseError, OSError):
    """A checkpoint is missing, unreadable, truncated or of an unknown layout."""


class HubUnavailableError(CheckpointError):
    """A hub id was given but the hub cannot be reached (offline, no network) and it is not cached."""


class AdapterError(CheckpointError):
    """A PEFT adapter that cannot be read exactly as a weight update of its base: an unsupported PEFT type or
    LoRA variant, a module the base lacks, factors whose shapes do not fit the base."""


class NonFiniteInputError(TaskfuseError, ValueError):
    """An input tensor holds NaN or Inf."""


class OutputExistsError(TaskfuseError, FileExistsError):
    """The output directory exists and is not empty."""


class OutputWriteError(TaskfuseError, OSError):
    """The output cannot be written: not enough free space, or the device failed during the write."""


class UsageError(TaskfuseError, ValueError):
    """An option or argument out of its range (a thread count below 1, an unknown name)."""


class DeviceError(UsageError):
    """A --device that is not a torch device, or one this machine's torch cannot use."""


def collect(errors: list[str], kind: type[TaskfuseError], header: str) -> None:
    """Raise one error listing every problem found, so users fix them all in one pass."""
    if errors:
        lines = "\n".join(f"  - {e}" for e in _grouped(errors))
        raise kind(f"{header} ({len(errors)} problem{'s' if len(errors) > 1 else ''}):\n{lines}")


TENSOR = re.compile(r"tensor '([^']*)'")
GROUPED_FROM = 3  # problems that differ only in the tensor they name, listed once from this many on


def _grouped(errors: list[str]) -> list[str]:
    """One line for problems that differ only in the tensor they name (a misspelt top-level parameter is a problem
    at every tensor: 291 lines for a 7B model), the other tensors named after it; the rest as they are."""
    groups: dict[str, list[tuple[str, str | None]]] = {}  # the problem with its tensor blanked → (problem, tensor)
    for e in errors:
        found = TENSOR.search(e)
        groups.setdefault(TENSOR.sub("tensor ?", e, count=1) if found else e, []).append(
            (e, found.group(1) if found else None))
    lines = []
    for members in groups.values():
        if len(members) < GROUPED_FROM or members[0][1] is None:
            lines += [e for e, _ in members]
            continue
        others = [repr(tensor) for _, tensor in members[1:]]
        shown = others if len(others) <= 3 else [*others[:2], "…", others[-1]]
        lines.append(f"{members[0][0]} — and the same at {len(others)} more tensors ({', '.join(shown)})")
    return lines


class TaskDataError(TaskfuseError, ValueError):
    """A benchmark task's data is missing (an uninstalled Debian package) or malformed (a user's task file)."""


class ZooError(TaskfuseError, RuntimeError):
    """An expert of the benchmark zoo cannot be built or loaded."""
