"""Keep masks from 16-bit draws: the exact keep probability (also below 2^-16), the mask form, position addressing."""
import math

import pytest
import torch

from taskfuse.methods.inputs import RandomField
from taskfuse.ops.bernoulli import LEVELS, drop_, keep_mask_block


def kept(keep: float, n: int, seed: int = 0) -> int:
    mask = keep_mask_block(seed, n, keep)
    assert mask.dtype == torch.int8 and set(mask.unique().tolist()) <= {-1, 0}
    return int((mask == -1).sum())


@pytest.mark.parametrize("keep", [0.5, 0.3, 0.9, 0.001])
def test_kept_fraction_is_binomial(keep):
    n = 1 << 22
    sigma = math.sqrt(n * keep * (1 - keep))
    assert abs(kept(keep, n, seed=3) - n * keep) < 5 * sigma


def test_keep_probability_below_the_16_bit_resolution_is_not_rounded_away():
    keep = 0.25 / LEVELS  # rounding to 2^-16 would keep nothing
    n, seeds = 1 << 22, range(8)
    total = sum(kept(keep, n, seed) for seed in seeds)
    expected = len(seeds) * n * keep  # 128
    assert abs(total - expected) < 5 * math.sqrt(expected)


def test_fraction_part_of_the_threshold_is_honoured():
    # 1.5 / 65536 against 1 / 65536: 384 against 256 entries expected in 2^24 draws, 6.5 sigma apart
    keep = 1.5 / LEVELS
    n, seeds = 1 << 22, range(4)
    total = sum(kept(keep, n, seed) for seed in seeds)
    assert abs(total - 4 * n * keep) < 4 * math.sqrt(4 * n * keep)
    assert abs(total - 4 * n / LEVELS) > 4 * math.sqrt(4 * n * keep)


def test_edges_keep_all_or_nothing():
    assert kept(1.0, 1 << 16) == 1 << 16 and kept(0.0, 1 << 16) == 0


def test_drop_zeroes_exactly_the_masked_entries_and_keeps_the_rest_bitwise():
    row = torch.randn(4096)
    mask = keep_mask_block(1, 4096, 0.4)
    out = drop_(row.clone(), mask)
    assert torch.equal(out[mask == -1], row[mask == -1])
    assert (out[mask == 0].view(torch.int32) == 0).all()  # +0.0, not -0.0


def test_a_slice_draws_what_the_whole_tensor_draws_at_its_positions():
    field = RandomField(7, "layer.weight")
    whole = field.keep_mask(1, slice(0, 300_000), 0.3)
    for sl in [slice(0, 10), slice(65_530, 65_545), slice(131_072, 262_144), slice(299_999, 300_000)]:
        assert torch.equal(field.keep_mask(1, sl, 0.3), whole[sl])
    assert not torch.equal(field.keep_mask(2, slice(0, 1000), 0.3), whole[:1000])  # streams differ
