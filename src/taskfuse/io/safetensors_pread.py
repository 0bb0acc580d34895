"""Read safetensors tensors with positioned reads into fresh buffers instead of through a memory map.

safetensors' own reader memory-maps the file, and every page a merge touches then stays resident in the process
(RSS) until the file is closed, so a streaming merge of multi-GB shards looked as large as the shards themselves.
Reading each tensor with os.preadv into a tensor we own keeps resident memory to the tensors actually in use; the
kernel's page cache still serves repeated reads. Headers are validated by the safetensors library at open time
(checkpoint.py); this module only computes offsets from the header the format defines.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch


class PreadSafetensors:
    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        header.pop("__metadata__", None)
        self._entries = header
        self._data_start = 8 + size
        self._fd = os.open(path, os.O_RDONLY)

    def get_tensor(self, name: str, dtype: torch.dtype, shape: tuple[int, ...],
                   out: torch.Tensor | None = None) -> torch.Tensor:
        """The tensor's data, read into `out` (contiguous, right shape and dtype) when given."""
        start, end = self._entries[name]["data_offsets"]
        tensor = torch.empty(shape, dtype=dtype) if out is None else out
        if end == start:
            return tensor
        view = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
        offset, done = self._data_start + start, 0
        while done < end - start:
            n = os.preadv(self._fd, [view[done:]], offset + done)
            if n <= 0:
                raise OSError(f"{self.path.name}: unexpected end of file reading {name!r}")
            done += n
        return tensor

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)
