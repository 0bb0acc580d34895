"""Statistics for data-aware merges (RegMean's Grams, Fisher diagonals) and RegMean++, on real tiny checkpoints."""
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForCausalLM

from taskfuse import merge
from taskfuse.errors import IncompatibleInputsError, SpecError
from taskfuse.io.statistics_file import save_statistics
from taskfuse.methods.inputs import Inputs
from taskfuse.methods.regmean import Regmean, regmean
from taskfuse.programs.regmean_sequential import depth_groups, sequential_grams
from taskfuse.programs.statistics import fisher_statistics, gram_statistics, normalized_fisher
from taskfuse.testing.checkpoints import build_family


def lm_forward(model, inputs):
    return model(input_ids=inputs["ids"], attention_mask=inputs["mask"]).logits


def token_batches(seed: int, count: int = 3, vocab: int = 128) -> list[dict]:
    """Right-padded batches of two sequences of different lengths (padding id 0, masked out)."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(1, vocab, (2, 9), generator=g)
        mask = torch.ones(2, 9, dtype=torch.long)
        mask[1, 5:] = 0
        batches.append({"ids": ids * mask, "mask": mask})
    return batches


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    base, tunes = build_family(tmp_path_factory.mktemp("stats"), "llama", 3, torch.float32)
    return base, tunes, [AutoModelForCausalLM.from_pretrained(t).eval() for t in tunes]


def test_a_gram_is_the_mean_outer_product_of_a_layers_inputs_over_real_tokens():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    grams = gram_statistics(model, [{"x": x, "mask": mask}], lambda m, inputs: m(inputs["x"]))
    real = x[mask.bool()]  # (7, 4): the padded positions never enter
    torch.testing.assert_close(grams["0.weight"], real.T @ real / 7)
    hidden = torch.relu(model[0](real))
    torch.testing.assert_close(grams["2.weight"], hidden.T @ hidden / 7, rtol=1e-5, atol=1e-6)


class ThreeReadersOfOneInput(nn.Module):
    """An attention's pattern: three layers read one tensor (their Gram is computed once and shared), then a layer
    reads another tensor of the same shape."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(4, 4) for _ in range(4))

    def forward(self, x):
        return self.o(self.q(x) * self.k(x) + self.v(x))


def test_layers_reading_one_input_share_its_gram_and_others_keep_their_own():
    torch.manual_seed(0)
    model = ThreeReadersOfOneInput()
    batches = [{"x": torch.randn(2, 5, 4), "mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])},
               {"x": torch.randn(3, 2, 4), "mask": torch.ones(3, 2, dtype=torch.long)}]
    grams = gram_statistics(model, batches, lambda m, inputs: m(inputs["x"]))
    xs = torch.cat([b["x"][b["mask"].bool()] for b in batches]).double()  # (14, 4) real tokens of both batches
    with torch.no_grad():
        hidden = torch.cat([(model.q(b["x"]) * model.k(b["x"]) + model.v(b["x"]))[b["mask"].bool()]
                            for b in batches]).double()
    for name in ("q.weight", "k.weight", "v.weight"):
        torch.testing.assert_close(grams[name], (xs.T @ xs / 14).float(), msg=name)
    torch.testing.assert_close(grams["o.weight"], (hidden.T @ hidden / 14).float(), rtol=1e-5, atol=1e-6)
    grams["q.weight"].add_(1)  # each weight's Gram is its own tensor, not a view of a shared one
    torch.testing.assert_close(grams["k.weight"], (xs.T @ xs / 14).float())


def test_padding_does_not_change_a_causal_lms_grams(family):
    """Two sequences padded into one batch give the Grams of the same sequences run unpadded, token-weighted."""
    model = family[2][0]
    padded = token_batches(1, 1)[0]
    alone = [{"ids": padded["ids"][:1], "mask": padded["mask"][:1]},
             {"ids": padded["ids"][1:, :5], "mask": padded["mask"][1:, :5]}]
    together, apart = gram_statistics(model, [padded], lm_forward), gram_statistics(model, alone, lm_forward)
    assert set(together) == {n for n, _ in model.named_parameters() if n.endswith("proj.weight")} | {"lm_head.weight"}
    for name in together:
        torch.testing.assert_close(together[name], apart[name], rtol=1e-4, atol=1e-6, msg=name)


class BagOfTokens(nn.Module):
    """An embedding (whose rows a step may skip: its gradient is sparse), mean pooling, a two-layer classifier."""

    def __init__(self):
        super().__init__()
        self.embed, self.hidden, self.out = nn.Embedding(12, 5), nn.Linear(5, 8), nn.Linear(8, 3)

    def forward(self, ids):
        return self.out(torch.tanh(self.hidden(self.embed(ids).mean(-2))))


def test_the_fisher_is_the_mean_of_per_example_squared_gradients():
    """Checked against per-example gradients from torch.func (vmap over grad), a different computation; the
    embedding's rows an example never looks up get no squared gradient from it, as in the dense computation."""
    torch.manual_seed(0)
    model = BagOfTokens()
    ids, y = torch.randint(0, 8, (6, 4)), torch.tensor([0, 1, 2, 2, 1, 0])  # rows 8-11 are never looked up

    def log_likelihood(m, inputs, labels):
        return -nn.functional.cross_entropy(m(inputs["ids"]), labels, reduction="sum")

    fisher, count = fisher_statistics(model, [({"ids": ids[i:i + 1]}, y[i:i + 1]) for i in range(6)], log_likelihood)
    params = dict(model.named_parameters())

    def one(p, xi, yi):
        return -nn.functional.cross_entropy(torch.func.functional_call(model, p, (xi[None],)), yi[None])

    per_example = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))(params, ids, y)
    assert count == 6 and set(fisher) == set(params)
    for name, g in per_example.items():
        torch.testing.assert_close(fisher[name], (g ** 2).mean(0), rtol=1e-5, atol=1e-8)
    looked_up = ids.unique()
    assert fisher["embed.weight"][8:].abs().max() == 0 and fisher["embed.weight"][looked_up].abs().min() > 0
    unit, norm = normalized_fisher(fisher)
    assert norm > 0 and abs(sum(float((f ** 2).sum()) for f in unit.values()) - 1) < 1e-5


def test_regmean_plusplus_is_replayed_exactly_by_the_engine_and_differs_from_regmean(tmp_path, family):
    base, tunes, models = family
    data = [token_batches(10 + t) for t in range(3)]
    grams, merged = sequential_grams(models, data, lm_forward, [1.0, 1.0, 1.0], 0.9)
    groups = depth_groups(list(grams[0]))
    assert [g[0].split(".")[2] for g in groups[:2]] == ["0", "1"] and groups[-1] == ["lm_head.weight"]
    folders = [save_statistics(tmp_path / f"s{t}", g, "gram", {"model": str(tunes[t])}) for t, g in enumerate(grams)]
    spec = {"method": "regmean", "models": [{"path": str(p), "statistics": str(f)} for p, f in zip(tunes, folders)],
            "params": {"off_diagonal_scale": 0.9}, "dtype": "float32"}
    written = load_file(merge(spec, tmp_path / "out").out / "model.safetensors")
    for name, value in merged.state_dict().items():
        if name in written:
            torch.testing.assert_close(written[name], value, rtol=1e-5, atol=1e-6, msg=name)
    own = [gram_statistics(m, batches, lm_forward) for m, batches in zip(models, data)]
    name = "model.layers.1.mlp.down_proj.weight"  # deep enough that the merged layers below change its inputs
    assert not torch.allclose(own[0][name], grams[0][name], rtol=1e-3)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert torch.isfinite(lm_forward(loaded, data[0][0])).all()


def test_regmean_with_own_grams_solves_each_layers_regression(tmp_path, family):
    """α = 1: the written weight makes the summed squared error over every model's data stationary (its gradient
    in W vanishes), which a plain average does not."""
    _, tunes, models = family
    data = [token_batches(20 + t) for t in range(3)]
    grams = [gram_statistics(m, batches, lm_forward) for m, batches in zip(models, data)]
    folders = [save_statistics(tmp_path / f"g{t}", g, "gram", {}) for t, g in enumerate(grams)]
    spec = {"method": "regmean", "models": [{"path": str(p), "statistics": str(f)} for p, f in zip(tunes, folders)],
            "params": {"off_diagonal_scale": 1.0}, "dtype": "float32"}
    written = load_file(merge(spec, tmp_path / "out").out / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    weights = [dict(m.named_parameters())[name].detach() for m in models]

    def gradient(w):  # d/dW Σ_t tr((W − W_t) G_t (W − W_t)ᵀ) / 2
        return sum((w - wt) @ g[name] for wt, g in zip(weights, grams))

    average = torch.stack(weights).mean(0)
    assert gradient(written[name]).abs().max() < 1e-4 * gradient(average).abs().max()
    same = regmean(Inputs(torch.stack(weights), torch.ones(3), key=name,
                          statistics=torch.stack([g[name] for g in grams])), Regmean(off_diagonal_scale=1.0))
    torch.testing.assert_close(written[name], same)


def test_statistics_are_checked_before_any_tensor_is_read(tmp_path, family):
    _, tunes, models = family
    gram = gram_statistics(models[0], token_batches(0, 1), lm_forward)
    grams = save_statistics(tmp_path / "gram", gram, "gram", {})
    fishers = save_statistics(tmp_path / "fisher", {k: torch.ones(1) for k in gram}, "fisher", {})
    misshapen = save_statistics(tmp_path / "misshapen", gram, "fisher", {})  # Grams where Fisher values belong
    models_with = lambda folder: [{"path": str(t), "statistics": str(folder)} for t in tunes]  # noqa: E731
    with pytest.raises(SpecError, match=r"has no `statistics:`.*taskfuse statistics"):
        merge({"method": "regmean", "models": [{"path": str(t)} for t in tunes]}, tmp_path / "a")
    with pytest.raises(SpecError, match="hold 'fisher', but the merge reads 'gram'"):
        merge({"method": "regmean", "models": models_with(fishers)}, tmp_path / "b")
    with pytest.raises(SpecError, match="does not read statistics"):
        merge({"method": "linear", "models": models_with(grams)}, tmp_path / "c")
    with pytest.raises(IncompatibleInputsError, match="have shape"):
        merge({"method": "fisher", "models": models_with(misshapen)}, tmp_path / "d")
    with pytest.raises(SpecError, match="does not exist"):
        merge({"method": "regmean", "models": models_with(tmp_path / "nowhere")}, tmp_path / "e")
    assert not any((tmp_path / x).exists() for x in "abcde")
