"""The output directory: staged under a hidden name, renamed into place only when complete."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from ..errors import OutputExistsError


def check_output_dir(out: Path) -> None:
    """Fail before any work if `out` cannot receive a merge."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"output {out} exists and is not empty. Fix: choose a new directory or remove it.")
    ancestor = out.resolve().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
        raise OutputExistsError(f"cannot create {out}: {ancestor} is not a writable directory. "
                                "Fix: choose another output path or fix its permissions.")


@contextmanager
def staged_directory(out: Path):
    """Yield a hidden sibling directory; on success it becomes `out`, on any error it is removed.

    An interrupted merge therefore leaves at most a dot-directory named '.<out>.partial-<pid>', never a
    directory that looks like a finished model.
    """
    check_output_dir(out)
    stage = out.resolve().parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)  # also creates missing parents of `out`
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()  # empty, checked above
    os.replace(stage, out)
