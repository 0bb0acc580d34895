"""The `taskfuse` console script's entry: load the command line's imports cheaply, then run it.

Start-up is a fifth of a fast merge (a 1.1B-parameter SLERP takes ~4 s, 1.2-1.5 s of it importing), so two
measured costs of importing torch and pydantic are avoided here, where taskfuse owns the process:
- The cyclic garbage collector ran full collections over the ~1M objects these imports create (0.14 s here) and
  found nothing to free: it is off while importing, and the imported objects are then frozen (gc.freeze) so no
  later collection walks them. Doing this in a library import would freeze its caller's objects too.
- CPython 3.11 keeps each thread's Python frames in 16 KiB chunks, freeing a chunk as soon as the stack shrinks
  below it. Imported as a dependency deep in taskfuse's import chain, torch's import ran along such a boundary and
  mapped and unmapped a chunk 12,000 times (80 ms); imported first, from this shallow frame, it does not.
"""
from __future__ import annotations

import gc


def main() -> None:
    gc.disable()
    try:
        import torch  # noqa: F401  (first and from a shallow frame: see above)

        from .main import main as run_command_line
    finally:
        gc.freeze()
        gc.enable()
    run_command_line()
