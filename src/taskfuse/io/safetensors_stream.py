"""Stream tensors into a .safetensors file one at a time.

The safetensors library only saves a whole dict held in memory. Because the plan fixes every output tensor's name,
shape and dtype before any data is read, we can write the header first and then append each tensor as soon as it
is computed, so peak memory never holds a whole shard. The format (8-byte little-endian header length, JSON header,
raw little-endian data) is specified at github.com/huggingface/safetensors; files are read back with the library.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from .checkpoint import _DTYPES
from .direct_file import DirectFile

_CODES = {v: k for k, v in _DTYPES.items()}


Layout = list[tuple[str, tuple[int, ...], torch.dtype]]


def file_header(layout: Layout, metadata: dict[str, str]) -> tuple[bytes, dict[str, int]]:
    """The file's leading bytes (length and JSON header), and each tensor's byte offset in the file."""
    header, offset, offsets = {"__metadata__": metadata}, 0, {}
    for name, shape, dtype in layout:
        size = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": _CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offsets[name] = offset
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data section must start 8-byte aligned
    start = 8 + len(raw)
    return len(raw).to_bytes(8, "little") + raw, {name: start + offset for name, offset in offsets.items()}


class SafetensorsStreamWriter:
    """Writes to `<path>.partial` and renames to `path` on close(); abort() removes the partial file."""

    def __init__(self, path: Path, layout: Layout, metadata: dict[str, str], direct: bool = True):
        self.path, self._partial = path, path.with_name(path.name + ".partial")
        self._order = [name for name, _, _ in layout]
        self._expect = {name: (tuple(shape), dtype) for name, shape, dtype in layout}
        self._next = 0
        self._file = DirectFile(self._partial, direct)  # see direct_file: the page cache costs more than it helps
        self._file.write(file_header(layout, metadata)[0])

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append the next tensor; it must come in layout order with the planned shape and dtype."""
        expected = self._order[self._next]
        shape, dtype = self._expect[expected]
        if name != expected or tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise RuntimeError(f"stream writer expected {expected} {shape} {dtype}, got {name} "
                               f"{tuple(tensor.shape)} {tensor.dtype}")
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        self._file.write(data.numpy())
        self._next += 1

    def close(self) -> None:
        if self._next != len(self._order):
            raise RuntimeError(f"{self.path.name}: only {self._next} of {len(self._order)} tensors written")
        self._file.close()
        os.replace(self._partial, self.path)

    def abort(self) -> None:
        self._file.abort()
