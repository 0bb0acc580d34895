import torch

from taskfuse.execute.buffers import BufferPool


def test_best_fit_reuse_and_cap():
    pool = BufferPool(max_free_bytes=4 * 1000)
    a = pool.take((10, 10), torch.float32)
    ptr = a.data_ptr()
    pool.give(a)
    b = pool.take((5, 4), torch.float32)  # served from the 100-element buffer
    assert b.shape == (5, 4) and b.data_ptr() == ptr and b.is_contiguous()
    pool.give(b)
    big = pool.take((2000,), torch.float32)  # nothing large enough: fresh
    assert big.data_ptr() != ptr
    pool.give(big)  # 8000 bytes idle > cap: the smallest buffer is dropped first, then the big one
    assert pool._free_bytes <= 4000


def test_dtypes_are_kept_apart():
    pool = BufferPool(10**6)
    a = pool.take((8,), torch.float32)
    pool.give(a)
    assert pool.take((8,), torch.bfloat16).dtype == torch.bfloat16


def test_foreign_tensors_are_not_recycled():
    """Mapped inputs and methods' own results never enter the pool: handing them out could write into a file's
    mapping or into a tensor someone still holds."""
    pool = BufferPool(10**6)
    pool.give(torch.empty(100))
    pool.give(torch.empty(100)[:50])
    assert pool._free_bytes == 0
    mine = pool.take((10,), torch.float32)
    pool.give(mine)
    assert pool._free_bytes == mine.nbytes


def test_buffers_placed_at_a_requested_address_residue_also_when_recycled():
    # the writer asks for an output's file position modulo the block size, so its blocks go to disk uncopied
    pool = BufferPool(10**7)
    for residue in (0, 2, 4094, 1000, 2, 3000):
        t = pool.take((300, 7), torch.bfloat16, address=(4096, residue))
        assert t.shape == (300, 7) and t.is_contiguous() and t.data_ptr() % 4096 == residue
        t.fill_(1.0)  # the whole view lies inside its buffer
        pool.give(t)
    assert len(pool._owned) == 1  # one buffer, re-placed for every residue
    odd = pool.take((10,), torch.float32, address=(4096, 3))  # no float32 can start at an odd address
    assert odd.shape == (10,) and odd.data_ptr() % 4 == 0
