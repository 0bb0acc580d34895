"""The O_DIRECT output file: exact bytes for any sizes, the buffered fallback, and nothing left on abort."""
import os

import numpy as np
import pytest

from taskfuse.io.direct_file import BLOCK, DirectFile


@pytest.mark.parametrize("direct", [True, False])
def test_bytes_round_trip_across_staging_and_block_boundaries(tmp_path, direct):
    pieces = [os.urandom(n) for n in (0, 1, 8, BLOCK - 1, 3 * BLOCK + 5, 2 * BLOCK, 7)]
    f = DirectFile(tmp_path / "out.bin", direct=direct, staging_bytes=2 * BLOCK)
    for piece in pieces:
        f.write(piece)
    f.close()
    assert (tmp_path / "out.bin").read_bytes() == b"".join(pieces)  # padding of the last block truncated away


def test_switching_to_buffered_midway_keeps_the_bytes(tmp_path):
    # what happens when a filesystem accepts O_DIRECT at open but refuses the writes
    f = DirectFile(tmp_path / "out.bin", staging_bytes=BLOCK)
    first, second = os.urandom(BLOCK + 3), os.urandom(2 * BLOCK + 1)
    f.write(first)
    f._go_buffered()
    f.write(second)
    f.close()
    assert not f.direct and (tmp_path / "out.bin").read_bytes() == first + second


def test_abort_removes_the_file(tmp_path):
    f = DirectFile(tmp_path / "out.bin", staging_bytes=BLOCK)
    f.write(os.urandom(3 * BLOCK))
    f.abort()
    assert list(tmp_path.iterdir()) == []


def test_data_placed_at_its_file_position_goes_out_without_staging_its_whole_blocks(tmp_path, monkeypatch):
    staged = []
    original = DirectFile._stage
    monkeypatch.setattr(DirectFile, "_stage", lambda self, src: (staged.append(len(src)), original(self, src)))
    memory = np.frombuffer(os.urandom(16 * BLOCK), dtype=np.uint8)
    aligned = memory[-memory.ctypes.data % BLOCK:]  # starts on a block boundary
    f = DirectFile(tmp_path / "out.bin", staging_bytes=2 * BLOCK)
    header = os.urandom(100)
    f.write(header)  # file position 100: data whose address is 100 past a boundary goes out in place
    placed = aligned[100:100 + 5 * BLOCK + 17]
    f.write(placed)
    unplaced = aligned[1:1 + 3 * BLOCK]  # address does not match position 100 + 5 * BLOCK + 17: staged
    f.write(unplaced)
    f.close()
    assert (tmp_path / "out.bin").read_bytes() == header + placed.tobytes() + unplaced.tobytes()
    assert staged[1:3] == [BLOCK - 100, 117]  # the placed data: only its partial first and last blocks
    assert sum(staged) == len(header) + (BLOCK - 100) + 117 + len(unplaced)
