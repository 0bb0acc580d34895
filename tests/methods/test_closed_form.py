"""Closed-form properties of each method, computed by hand."""
import math

import pytest
import torch

from taskfuse.methods import (
    Breadcrumbs, Consensus, Dare, Della, Inputs, IsoC, IsoCts, Karcher, Linear, ModelStock, Slerp, Ties, Tsv,
    breadcrumbs, consensus, dare_linear, della, iso_c, iso_cts, karcher, linear, model_stock, slerp, ties, tsv,
)
from taskfuse.methods.della import keep_probabilities
from taskfuse.ops.masks import band_magnitude_mask, keep_count, top_magnitude_mask

FIXTURE = Inputs.of(torch.tensor([[1.0], [-0.6], [-0.6]]), [1.0, 0.5, 0.5])


def test_design_fixture_peft_rule_gives_minus_0_3():
    assert ties(FIXTURE, Ties(density=1.0)).item() == pytest.approx(-0.3)


def test_design_fixture_mergekit_rule_gives_plus_1():
    p = Ties(density=1.0, elect_on="weighted", normalize="weights")
    assert ties(FIXTURE, p).item() == pytest.approx(1.0)


def test_sign_election_by_count_differs_from_mass():
    x = Inputs.of(torch.tensor([[3.0], [-1.0], [-1.0]]))
    assert ties(x, Ties(density=1.0, sign_election="mass")).item() == pytest.approx(3.0)
    assert ties(x, Ties(density=1.0, sign_election="count")).item() == pytest.approx(-1.0)


def test_normalize_by_weights_vs_count_vs_none():
    x = Inputs.of(torch.tensor([[2.0], [4.0]]), [1.0, 3.0])
    assert ties(x, Ties(density=1.0, normalize="weights")).item() == pytest.approx((2 + 12) / 4)
    assert ties(x, Ties(density=1.0, normalize="count")).item() == pytest.approx((2 + 12) / 2)
    assert ties(x, Ties(density=1.0, normalize="none")).item() == pytest.approx(14.0)


@pytest.mark.parametrize("n,density", [(100, 0.2), (63, 0.5), (7, 0.01), (1, 0.3)])
def test_top_magnitude_keeps_exactly_k(n, density):
    x = torch.randn(n)
    assert int(top_magnitude_mask(x, density).sum()) == keep_count(density, n) == max(1, int(density * n))


def test_top_magnitude_tie_break_is_by_index():
    x = torch.tensor([1.0, -1.0, 1.0, 0.5])
    assert top_magnitude_mask(x, 0.5).tolist() == [True, True, False, False]


def test_ties_keeps_top_k_per_model():
    x = Inputs.of(torch.tensor([[5.0, 1.0, -2.0, 0.1], [0.0, 0.0, 0.0, 0.0]]))
    out = ties(x, Ties(density=0.5))
    assert out.tolist() == [5.0, 0.0, -2.0, 0.0]


def test_ties_whole_model_trim_uses_thresholds():
    x = Inputs.of(torch.tensor([[5.0, 1.0, -2.0, 0.1]]))
    out = ties(x, Ties(trim="model", thresholds=(1.0,)))
    assert out.tolist() == [5.0, 1.0, -2.0, 0.0]
    with pytest.raises(ValueError, match="threshold"):
        ties(x, Ties(trim="model"))


def test_dare_survivors_equal_tau_over_p():
    tau = torch.randn(2, 2000) + 3.0
    x = Inputs.of(tau, [1.0, 0.0], key="w")
    out = dare_linear(x, Dare(density=0.25))
    kept = out != 0
    torch.testing.assert_close(out[kept], tau[0][kept] / 0.25)
    assert abs(kept.float().mean().item() - 0.25) < 0.05


def test_dare_l1_rescale_matches_norm():
    tau = torch.randn(1, 500)
    out = dare_linear(Inputs.of(tau, key="w"), Dare(density=0.3, rescale="l1"))
    assert out.abs().sum().item() == pytest.approx(tau.abs().sum().item(), rel=1e-5)


def test_dare_is_unbiased_statistically():
    tau = torch.randn(1, 20000)
    outs = torch.stack([dare_linear(Inputs.of(tau, key=f"k{i}"), Dare(density=0.5)) for i in range(40)])
    # E[out] = τ: the average over draws, projected on τ, recovers τ's energy. Its standard error here is ~0.002,
    # so a 1 % bias in the rescale (1/p) fails this, not only a gross one
    ratio = float((outs.mean(0) * tau[0]).sum() / (tau[0] * tau[0]).sum())
    assert abs(ratio - 1) < 0.01
    wrong = outs * 0.5 / 0.51  # what rescaling by 1/0.51 instead of 1/0.5 would give
    assert abs(float((wrong.mean(0) * tau[0]).sum() / (tau[0] * tau[0]).sum()) - 1) > 0.01


def test_slerp_endpoints_and_midpoint_angle():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    x = Inputs.of([a, b])
    torch.testing.assert_close(slerp(x, Slerp(t=0.0)), a)
    torch.testing.assert_close(slerp(x, Slerp(t=1.0)), b)
    mid = slerp(x, Slerp(t=0.5))
    s = math.sin(math.pi / 4) / math.sin(math.pi / 2)
    torch.testing.assert_close(mid, s * a + s * b)


def test_slerp_colinear_falls_back_to_lerp():
    a = torch.tensor([1.0, 2.0, 3.0])
    out = slerp(Inputs.of([a, 2 * a]), Slerp(t=0.25))
    torch.testing.assert_close(out, 1.25 * a)


def test_tsv_on_orthogonal_inputs_equals_sum():
    # each task's top-k (k = rank/T = 4) singular subspaces are orthogonal to the other's
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    r, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    t1 = (q[:, :4] * torch.tensor([4.0, 3, 2, 1], dtype=torch.float64) @ r[:, :4].T).float()
    t2 = (q[:, 4:] * torch.tensor([5.0, 2, 1, 0.5], dtype=torch.float64) @ r[:, 4:].T).float()
    out = tsv(Inputs.of([t1, t2]), Tsv())
    torch.testing.assert_close(out, t1 + t2, atol=1e-5, rtol=1e-5)


def test_iso_c_flattens_the_spectrum():
    x = Inputs.of(torch.randn(3, 12, 8))
    s = torch.linalg.svdvals(iso_c(x, IsoC()))
    s_ta = torch.linalg.svdvals(x.stack.sum(0))
    torch.testing.assert_close(s, torch.full_like(s, s_ta.mean().item()), atol=1e-4, rtol=1e-4)


def test_iso_cts_with_full_common_space_equals_iso_c():
    x = Inputs.of(torch.randn(3, 12, 8))
    torch.testing.assert_close(iso_cts(x, IsoCts(common_fraction=1.0)), iso_c(x, IsoC()), atol=1e-5, rtol=1e-4)


def test_iso_cts_spectrum_is_flat():
    x = Inputs.of(torch.randn(2, 16, 10))
    s = torch.linalg.svdvals(iso_cts(x, IsoCts(common_fraction=0.6)))
    assert (s.max() - s.min()) / s.max() < 1e-4


def lora_stack(tasks=3, rank=2, m=40, n=30, seed=0):
    """Task vectors as LoRA experts make them: scaling · B·A of rank `rank`, in float32."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randn(m, rank, generator=g) @ torch.randn(rank, n, generator=g) / 10
                        for _ in range(tasks)])


def test_subspace_methods_keep_low_rank_task_vectors_low_rank():
    """A sum of three rank-2 updates has 6 directions; Iso-C, Iso-CTS and TSV must not give the other 24 (round-off
    noise) the spectrum's mean: their output stays in the updates' span, with Iso-C's spectrum flat on it."""
    stack = lora_stack()
    x = Inputs.of(list(stack))
    for out in (iso_c(x, IsoC()), iso_cts(x, IsoCts()), tsv(x, Tsv())):
        assert torch.linalg.matrix_rank(out.double(), rtol=1e-5).item() <= 6
    s = torch.linalg.svdvals(iso_c(x, IsoC()).double())
    s_sum = torch.linalg.svdvals(stack.sum(0).double())[:6]
    torch.testing.assert_close(s[:6], torch.full_like(s[:6], s_sum.mean().item()), atol=1e-4, rtol=1e-4)
    assert s[6:].max() < 1e-4 * s[0]
    assert torch.equal(iso_c(Inputs.of([stack[0], -stack[0]]), IsoC()), torch.zeros_like(stack[0]))


def test_model_stock_interpolation_ratio():
    # two task vectors at 60 degrees: cos = 0.5, k = 2 -> t = 2*0.5/(0.5+1) = 2/3
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.5, math.sqrt(3) / 2])
    out = model_stock(Inputs.of([a, b]), ModelStock())
    torch.testing.assert_close(out, (2 / 3) * (a + b) / 2)


def test_karcher_of_two_equal_norm_vectors_is_slerp_midpoint():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    out = karcher(Inputs.of([a, b]), Karcher(max_iter=50))
    torch.testing.assert_close(out, torch.tensor([1.0, 1.0]) / math.sqrt(2), atol=1e-5, rtol=1e-5)


def test_linear_is_weighted_mean():
    x = Inputs.of(torch.tensor([[0.0], [3.0]]), [1.0, 2.0])
    assert linear(x, Linear()).item() == pytest.approx(2.0)
    assert linear(x, Linear(normalize=False)).item() == pytest.approx(6.0)


def test_breadcrumbs_band_mask_counts():
    x = torch.arange(1.0, 101.0)
    m = band_magnitude_mask(x, density=0.5, gamma=0.1)
    assert int(m.sum()) == 50
    assert not m[90:].any() and m[40:90].all()  # top 10 dropped, next 50 kept
    out = breadcrumbs(Inputs.of(x[None]), Breadcrumbs(density=0.5, gamma=0.1))
    assert int((out != 0).sum()) == 50


def test_consensus_keeps_entries_shared_by_k_tasks():
    # entry 0 matters to both tasks; entry 1 only to task 0
    x = Inputs.of(torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    out = consensus(x, Consensus(k=2, tall_lambda=1.0))
    assert out.tolist() == [2.0, 0.0]


def test_della_keep_probabilities_span_window():
    t = torch.tensor([[0.1, -3.0, 2.0, 0.5]])
    p = keep_probabilities(t, 0.5, 0.2)
    assert p.min().item() == pytest.approx(0.3) and p.max().item() == pytest.approx(0.7)
    assert p[0, 1].item() == pytest.approx(0.7)  # largest magnitude kept most often


def test_della_rejects_window_outside_unit_interval():
    with pytest.raises(ValueError, match="epsilon"):
        Della(density=0.1, epsilon=0.2)


def test_largest_mask_tie_break_and_nesting():
    from taskfuse.ops.masks import magnitude_cut

    def largest_mask(values, count):
        return magnitude_cut(values, count).keep(values.abs())

    v = torch.tensor([2.0, 1.0, 2.0, 1.0, 1.0, 3.0])
    assert largest_mask(v, 3).tolist() == [True, False, True, False, False, True]
    assert largest_mask(v, 4).tolist() == [True, True, True, False, False, True]
    for a in range(7):
        assert (largest_mask(v, a) <= largest_mask(v, a + 1)).all()


def test_zero_divisors_are_defined():
    # weights summing to zero (task negation) with normalisation: divide by 1, not by 0
    x = Inputs.of(torch.tensor([[2.0], [1.0]]), [1.0, -1.0])
    assert linear(x, Linear()).item() == pytest.approx(1.0)
    # no model agrees with the elected sign at an entry whose vectors are all zero: stays 0
    z = Inputs.of(torch.zeros(2, 3))
    assert ties(z, Ties(density=1.0, normalize="weights")).abs().sum().item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunked_selection_matches_global_rank_with_many_ties(monkeypatch, dtype):
    import taskfuse.ops.chunks as chunks
    import taskfuse.ops.masks as masks
    import taskfuse.ops.slices as slices

    monkeypatch.setattr(slices, "chunk_slices", lambda n: chunks.chunk_slices(n, 7))  # many tiny chunks
    x = torch.randint(-4, 5, (101,)).to(dtype)  # heavy ties, as in bf16 task vectors
    for k in (1, 13, 50, 100):
        mask = masks.magnitude_cut(x, k).keep(x.abs())
        order = sorted(range(101), key=lambda i: (-abs(float(x[i])), i))
        assert mask.nonzero().squeeze(1).tolist() == sorted(order[:k])


@pytest.mark.parametrize("method,params", [("dare_linear", Dare(density=0.3)), ("dare_ties", None),
                                           ("ties", Ties(density=0.3)), ("breadcrumbs", Breadcrumbs(density=0.5))])
def test_chunk_size_does_not_change_results(monkeypatch, method, params):
    import taskfuse.ops.chunks as chunks
    from taskfuse.methods import get_method

    info = get_method(method)
    p = params or info.params(density=0.3)
    x = Inputs.of(torch.randn(3, 37, 29), [1.0, 0.5, 0.8], key="layer.weight", seed=4)
    whole = info.fn(x, p)
    monkeypatch.setattr(chunks, "CHUNK", 64)
    monkeypatch.setattr(chunks.chunk_slices, "__defaults__", (64,))
    sliced = info.fn(x, p)
    torch.testing.assert_close(whole, sliced, atol=0, rtol=0)
