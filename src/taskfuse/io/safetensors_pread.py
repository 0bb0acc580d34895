"""Read safetensors tensors one at a time: mapped per tensor, or with positioned reads into our buffers.

safetensors' own reader memory-maps the whole file, and every page a merge touches then stays resident in the
process (RSS) until the file is closed, so a streaming merge of multi-GB shards looked as large as the shards
themselves. Here each tensor is either mapped on its own (its pages leave the process when the tensor is freed) or
read with os.preadv into a tensor we own; both keep resident memory to the tensors in use, and the kernel's page
cache serves repeated reads. Headers are validated by the safetensors library at open time (checkpoint.py); this
module only computes offsets from the header the format defines.
"""
from __future__ import annotations

import json
import mmap
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

    def map_tensor(self, name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor | None:
        """The tensor's data mapped from the page cache without a copy, or None where the kernel cannot prefault
        a mapping (MADV_POPULATE_READ needs Linux 5.14): then the caller reads it instead.

        Measured here: 7.9 GB/s mapped and prefaulted vs 3.4 GB/s for preadv (or a mapping faulted page by page).
        The mapping is private, so a stray write could never reach the checkpoint file.
        """
        start, end = self._entries[name]["data_offsets"]
        if end == start or _POPULATE_READ is None:
            return None
        offset = self._data_start + start
        aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
        if offset + (end - start) > os.fstat(self._fd).st_size:  # never map past the end: reading there is SIGBUS
            raise OSError(f"{self.path.name} is shorter than its header says (truncated while open?)")
        region = mmap.mmap(self._fd, offset + (end - start) - aligned, flags=mmap.MAP_PRIVATE,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=aligned)
        try:
            region.madvise(_POPULATE_READ)
        except OSError:
            region.close()
            return None
        data = torch.frombuffer(region, dtype=torch.uint8, offset=offset - aligned, count=end - start)
        return data.view(dtype).reshape(shape)  # the tensor keeps `region` alive; freeing it unmaps

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)


# MADV_POPULATE_READ (Linux >= 5.14) fills a mapping's page tables from the page cache in one call
_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22 if os.uname().sysname == "Linux" else None)
