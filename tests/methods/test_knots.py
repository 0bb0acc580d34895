"""KnOTS: the shared basis reproduces every update, and the merge stays in the updates' column span."""
import pytest
import torch

from taskfuse.methods import Inputs, Knots, Ties, knots, ties
from taskfuse.methods.knots import aligned, aligned_by_gram


def lora_updates(count=3, shape=(24, 16), rank=2, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((count, shape[0], rank), generator=g) @ torch.randn((count, rank, shape[1]), generator=g)


def test_the_shared_basis_reproduces_each_update_and_has_their_joint_rank():
    stack = lora_updates()
    basis, coordinates = aligned(stack)
    assert basis.shape == (24, 6) and coordinates.shape == (3, 6, 16)  # 3 updates of rank 2
    torch.testing.assert_close(basis.T @ basis, torch.eye(6, dtype=basis.dtype), atol=1e-10, rtol=0)
    for update, coordinate in zip(stack, coordinates):
        torch.testing.assert_close((basis @ coordinate).float(), update, atol=1e-5, rtol=1e-5)


def test_the_merge_lies_in_the_updates_column_span():
    stack = lora_updates()
    merged = knots(Inputs.of(stack), Knots(density=0.3)).double()
    span = torch.linalg.svd(torch.cat(list(stack.double()), dim=1), full_matrices=False)[0][:, :6]
    assert (merged - span @ (span.T @ merged)).abs().max() < 1e-5 * merged.abs().max()
    assert merged.abs().max() > 0


def test_at_full_density_with_agreeing_signs_it_is_the_mean_update():
    """One update repeated with positive weights: every coordinate agrees in sign, so TIES's disjoint mean of the
    coordinates is that update's coordinates, and the merge is the update."""
    update = lora_updates(count=1)[0]
    stack = torch.stack([update, update, update])
    torch.testing.assert_close(knots(Inputs.of(stack), Knots(density=1.0, scale=2.0)), 2 * update,
                               atol=1e-5, rtol=1e-5)


def test_other_tensors_take_the_inner_merge_and_dare_ties_is_seeded():
    vectors = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    x = Inputs(vectors, torch.ones(3), key="layer.0.bias", seed=3)
    torch.testing.assert_close(knots(x, Knots(density=0.4)), ties(x, Ties(density=0.4)))
    matrices = Inputs(lora_updates(), torch.ones(3), key="layer.0.weight", seed=3)
    dare = Knots(inner="dare_ties", density=0.5)
    torch.testing.assert_close(knots(matrices, dare), knots(matrices, dare))
    assert not torch.equal(knots(matrices, dare), knots(Inputs(matrices.stack, matrices.weights, key=matrices.key,
                                                               seed=4), dare))


@pytest.mark.parametrize("rank", [None, 2])
def test_a_tall_concatenation_is_aligned_through_its_gram_matrix_as_by_the_svd(rank):
    """m > T·n (a vocabulary table): the Gram route, in blocks of rows, gives the SVD route's coordinates (up to each
    direction's sign, which U carries too) and the same merge, full-rank or of low-rank updates."""
    g = torch.Generator().manual_seed(2)
    stack = (torch.randn(3, 200, 16, generator=g) if rank is None
             else torch.randn(3, 200, rank, generator=g) @ torch.randn(3, rank, 16, generator=g))
    basis, coordinates = aligned(stack)
    by_gram, back = aligned_by_gram(stack, rows=64)
    assert by_gram.shape == coordinates.shape == (3, 48 if rank is None else 6, 16)
    signs = torch.sign((by_gram * coordinates).sum(dim=(0, 2)))[None, :, None]
    torch.testing.assert_close(by_gram * signs, coordinates, rtol=1e-8, atol=1e-8 * coordinates.abs().max())
    torch.testing.assert_close(back(by_gram[0]), stack[0], rtol=1e-5, atol=1e-5)  # U · coordinates of one update
    x = Inputs(stack, torch.ones(3), key="embed.weight")
    merged = ties(Inputs(coordinates.float(), torch.ones(3), key="embed.weight"), Ties(density=0.3))
    torch.testing.assert_close(knots(x, Knots(density=0.3)), (basis @ merged.double()).float(), rtol=1e-5, atol=1e-5)
