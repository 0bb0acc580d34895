"""KnOTS: the shared basis reproduces every update, and the merge stays in the updates' column span."""
import pytest
import torch

from taskfuse.methods import Inputs, Knots, Ties, knots, ties
from taskfuse.methods.knots import aligned, aligned_by_gram
from taskfuse.ops.subspace import numerical_rank


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


def svd_reference(stack: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's alignment as written: the SVD of the updates side by side, less the round-off directions."""
    n_tasks, _, n = stack.shape
    joined = torch.cat(list(stack.double()), dim=1)
    u, s, vh = torch.linalg.svd(joined, full_matrices=False)
    k = numerical_rank(s, joined.shape)
    return u[:, :k], (s[:k, None] * vh[:k]).reshape(k, n_tasks, n).transpose(0, 1)


@pytest.mark.parametrize("rank", [None, 2])
@pytest.mark.parametrize("rows", [12, 200])  # a wide concatenation (3·16 columns) and a tall one
def test_the_gram_routes_align_as_the_svd_of_the_concatenation_does(rank, rows):
    """Both Gram routes (XXᵀ for `aligned`, XᵀX by blocks of rows for `aligned_by_gram`) give the SVD's coordinates
    up to each direction's sign (which U carries too) and take them back to the updates, full-rank or low-rank."""
    g = torch.Generator().manual_seed(2)
    stack = (torch.randn(3, rows, 16, generator=g) if rank is None
             else torch.randn(3, rows, rank, generator=g) @ torch.randn(3, rank, 16, generator=g))
    reference_basis, reference = svd_reference(stack)
    basis, coordinates = aligned(stack)
    by_gram, back = aligned_by_gram(stack, rows=64)
    for found in (coordinates, by_gram):
        assert found.shape == reference.shape == (3, min(rows, 48) if rank is None else 6, 16)
        signs = torch.sign((found * reference).sum(dim=(0, 2)))[None, :, None]
        torch.testing.assert_close(found * signs, reference, rtol=1e-8, atol=1e-8 * reference.abs().max())
    for t in range(3):
        torch.testing.assert_close((basis @ coordinates[t]).float(), stack[t], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(back(by_gram[t]), stack[t], rtol=1e-5, atol=1e-5)


def test_a_tall_stack_is_merged_through_its_gram_matrix_as_through_the_svd():
    g = torch.Generator().manual_seed(3)
    stack = torch.randn(3, 200, 16, generator=g)
    basis, coordinates = svd_reference(stack)
    merged = ties(Inputs(coordinates.float(), torch.ones(3), key="embed.weight"), Ties(density=0.3))
    torch.testing.assert_close(knots(Inputs(stack, torch.ones(3), key="embed.weight"), Knots(density=0.3)),
                               (basis @ merged.double()).float(), rtol=1e-5, atol=1e-5)
