"""The last resort: an error taskfuse did not anticipate prints one paragraph, and the traceback goes to a file."""
from __future__ import annotations

import os
import tempfile
import time
import traceback
from pathlib import Path

from rich.console import Console

from ..io.cache_dir import cache_root

EXIT_STATUS = 70  # EX_SOFTWARE: an internal error, not bad input (bad input exits 2)


def save_traceback(error: BaseException) -> Path:
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    for folder in (cache_root() / "crashes", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
            return folder / name
        except OSError:
            continue
    raise error  # nowhere to write: let Python print it


def report_crash(error: BaseException, console: Console) -> None:
    path = save_traceback(error)
    console.print(f"[bold red]internal error[/] ({type(error).__name__}: {error}). This is a bug in taskfuse, not "
                  f"in your input. The full traceback is in {path}; please attach it to a bug report.",
                  highlight=False, soft_wrap=True)
