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
    parent = out.resolve().parent
    if not parent.exists() or not os.access(parent, os.W_OK):
        raise OutputExistsError(f"cannot write into {parent}: it does not exist or is not writable. "
                                "Fix: create it or choose another output path.")


@contextmanager
def staged_directory(out: Path):
    """Yield a hidden sibling directory; on success it becomes `out`, on any error it is removed.

    An interrupted merge therefore leaves at most a dot-directory named '.<out>.partial-<pid>', never a
    directory that looks like a finished model.
    """
    check_output_dir(out)
    stage = out.resolve().parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()  # empty, checked above
    os.replace(stage, out)
