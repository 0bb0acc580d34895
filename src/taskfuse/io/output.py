"""Every folder taskfuse writes (a merge, a zoo expert, a benchmark report, the demo's work folder) goes through here.

A folder is built under a hidden sibling name, `.<name>.partial-<pid>`, synced to disk and renamed into place only
when complete, so a crash or a kill leaves no folder that looks finished. A folder taskfuse wrote carries a marker
file naming what it is; an existing folder is replaced only when it is empty or holds that marker for the same kind
of output. Anything else a user has there is refused with a typed error and left untouched.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import OutputExistsError, OutputWriteError, TaskfuseError

MARKER = ".taskfuse-output.json"
# errno values that mean the output's disk, not taskfuse, failed: reported as OutputWriteError, not a traceback
WRITE_FAILURES = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
                  errno.EIO: "the device reported an I/O error", errno.EROFS: "the file system is read-only"}
KIND_NAMES = {"merge": "merged model", "report": "benchmark report", "expert": "zoo expert", "demo": "demo folder",
              "adapter": "LoRA adapter", "routed": "routed model", "gguf": "GGUF model",
              "statistics": "model statistics folder", "download": "downloaded model"}


def written_kind(folder: Path) -> str | None:
    """The kind of output taskfuse wrote into `folder`, from its marker; None if it has no readable marker."""
    try:
        return json.loads((folder / MARKER).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def check_output_dir(out: Path, kind: str = "merge") -> None:
    """Fail before any work if `out` cannot receive an output of `kind` (see the module docstring for the rule)."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise OutputExistsError(f"output {out} exists and is not a folder. Fix: choose another path for the "
                                    f"{KIND_NAMES[kind]}.")
        found = written_kind(out)
        if found != kind and any(out.iterdir()):
            what = f"a taskfuse {KIND_NAMES.get(found, found)}" if found else "files taskfuse did not write"
            raise OutputExistsError(
                f"output {out} exists and is not empty: it holds {what}, which taskfuse never replaces. Fix: choose "
                f"a new folder for the {KIND_NAMES[kind]}, or move or delete {out} yourself.")
    ancestor = out.resolve().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
        raise OutputExistsError(f"cannot create {out}: {ancestor} is not a writable directory. "
                                "Fix: choose another output path or fix its permissions.")


def check_free_space(out: Path, nbytes: int) -> None:
    """Fail before any work if the disk that will hold `out` has less than `nbytes` free."""
    ancestor = Path(out).resolve()
    while not ancestor.exists():
        ancestor = ancestor.parent
    free = shutil.disk_usage(ancestor).free
    if free < nbytes:
        raise OutputWriteError(f"output {out} needs {_size(nbytes)} but the disk holding {ancestor} has "
                               f"{_size(free)} free. Fix: free some space or choose an output folder on another disk.")


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_stages(out: Path) -> list[Path]:
    """Remove `out`'s staging folders left by processes that are gone (killed, crashed, powered off).

    A staging folder of a live process is kept: that may be another run writing the same output right now.
    """
    removed = []
    stages = [*out.parent.glob(f".{out.name}.partial-*"), *out.parent.glob(f".{out.name}.replaced-*")]
    for stage in stages:
        pid = stage.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stage, ignore_errors=True)
            removed.append(stage)
    return removed


def sync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder`, so that after a power cut a renamed folder is complete."""
    for root, dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        sync_dir(Path(root))


def sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mark(folder: Path, kind: str) -> None:
    from .. import __version__

    (folder / MARKER).write_text(json.dumps({"kind": kind, "taskfuse": __version__}) + "\n")


@contextmanager
def staged_output(out: Path, kind: str) -> Iterator[Path]:
    """Yield a hidden staging folder; on success it is marked, synced and renamed to `out`; on any error (Ctrl-C
    and SIGTERM included) it is removed. A previous output of the same kind at `out` is replaced."""
    out = Path(out)
    check_output_dir(out, kind)
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_stages(parent / out.name)
    stage = parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
        mark(stage, kind)
        sync_tree(stage)
        _replace(stage, parent / out.name, kind)
    except OSError as e:
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(e, TaskfuseError) or e.errno not in WRITE_FAILURES:
            raise
        raise OutputWriteError(f"writing {out} failed: {WRITE_FAILURES[e.errno]} ({e.strerror}: "
                               f"{e.filename or stage}). Nothing was left behind. Fix: free space or choose an output "
                               "folder on another disk, then run again.") from e
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _replace(stage: Path, out: Path, kind: str) -> None:
    """Rename `stage` to `out`, moving a previous output of ours aside first and deleting it afterwards."""
    check_output_dir(out, kind)  # again: minutes may have passed since the first check
    old = None
    if out.exists():
        if written_kind(out) == kind:
            old = out.with_name(f".{out.name}.replaced-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        else:
            out.rmdir()  # empty, checked above
    try:
        os.replace(stage, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)  # put the earlier output back: a failed replace must not lose it
        raise
    sync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def claim_folder(folder: Path, kind: str) -> Path:
    """Make `folder` a fresh, marked work folder of `kind` in place (for work folders whose contents refer to their
    own final paths, such as the demo's specs): a previous one of ours is removed, anything else refused."""
    folder = Path(folder)
    check_output_dir(folder, kind)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    mark(folder, kind)
    return folder
