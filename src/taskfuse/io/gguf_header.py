"""A GGUF file's header, read for merging: its metadata values and where each tensor's bytes lie.

The `gguf` package's GGUFReader builds a numpy view for every part of every metadata value; a 50k-token vocabulary
and its merges are ~100k strings, so it spends 1.6-1.8 s per file on a header a merge reads three numbers of, five
times what merging the file's tensors costs (benchmarks/gguf_input_cost.py). This reader walks the same layout (as
the GGUF specification in ggml's docs/gguf.md defines it; value and tensor type numbers are the `gguf` package's
enums) and keeps arrays of strings as their length only. GGUFReader remains the reader wherever every metadata
value is wanted (writing a GGUF's tokenizer). Big-endian files and version 1 (32-bit counts) are not read.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# GGUFValueType -> (struct format, numpy dtype) of the fixed-width scalar types
_SCALARS = {0: ("<B", np.uint8), 1: ("<b", np.int8), 2: ("<H", np.uint16), 3: ("<h", np.int16),
            4: ("<I", np.uint32), 5: ("<i", np.int32), 6: ("<f", np.float32), 7: ("<?", np.bool_),
            10: ("<Q", np.uint64), 11: ("<q", np.int64), 12: ("<d", np.float64)}
_STRING, _ARRAY = 8, 9
_DEFAULT_ALIGNMENT = 32


class UnreadableHeader(ValueError):
    """A GGUF this reader does not take: another byte order or version."""


@dataclass(frozen=True)
class StringArray:
    """An array of strings in the metadata (a vocabulary, merges), kept as its length."""

    length: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # GGUF's order: fastest-varying first (the reverse of torch's shape)
    type: int  # GGMLQuantizationType's value
    start: int  # byte offset in the file
    size: int  # bytes


@dataclass(frozen=True)
class GGUFHeader:
    fields: dict[str, Any]
    tensors: list[TensorInfo]


def read_header(path: Path) -> GGUFHeader:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    data = np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)  # plain view: no memmap bookkeeping per slice
    cursor = _Cursor(data)
    if bytes(data[:4]) != b"GGUF":
        raise ValueError("no GGUF magic at its start")
    cursor.at = 4
    version = cursor.scalar("<I")
    if version not in (2, 3):
        big = int.from_bytes(bytes(data[4:8]), "big")
        raise UnreadableHeader(f"big-endian, version {big}" if big in (1, 2, 3) else f"version {version}")
    tensor_count, field_count = cursor.scalar("<Q"), cursor.scalar("<Q")
    fields = {}
    for _ in range(field_count):
        key = cursor.string()
        fields[key] = cursor.value(cursor.scalar("<I"))
    infos = []
    for _ in range(tensor_count):
        name = cursor.string()
        dims = tuple(cursor.scalar("<Q") for _ in range(cursor.scalar("<I")))
        infos.append((name, dims, cursor.scalar("<I"), cursor.scalar("<Q")))
    alignment = int(fields.get("general.alignment", _DEFAULT_ALIGNMENT))
    start = -(-cursor.at // alignment) * alignment
    tensors = []
    for name, dims, kind, offset in infos:
        block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        size = int(np.prod(dims, dtype=np.int64)) // block * block_bytes
        if start + offset + size > len(data):
            raise ValueError(f"tensor {name!r} ends past the end of the file")
        tensors.append(TensorInfo(name, dims, kind, start + offset, size))
    return GGUFHeader(fields, tensors)


class _Cursor:
    def __init__(self, data: np.ndarray):
        self.data, self.buffer, self.at = data, memoryview(data), 0

    def scalar(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.buffer, self.at)
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.scalar("<Q")
        self.at += length
        return bytes(self.buffer[self.at - length:self.at]).decode("utf-8", errors="replace")

    def value(self, kind: int):
        if kind == _STRING:
            return self.string()
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind][0])
        if kind != _ARRAY:
            raise ValueError(f"unknown metadata value type {kind}")
        kind, count = self.scalar("<I"), self.scalar("<Q")
        if kind in _SCALARS:
            dtype = np.dtype(_SCALARS[kind][1]).newbyteorder("<")
            values = np.frombuffer(self.buffer, dtype, count, self.at)
            self.at += count * dtype.itemsize
            return values.tolist()
        if kind == _STRING:  # skipped: each string's length, then its bytes
            for _ in range(count):
                self.at += 8 + struct.unpack_from("<Q", self.buffer, self.at)[0]
            return StringArray(count)
        return [self.value(kind) for _ in range(count)]  # arrays of arrays: rare, small
