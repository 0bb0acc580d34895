"""PHATGOOSE: gates trained per adapter with everything else frozen; routing by standardised affinity."""
import pytest
import torch

from taskfuse.routing.library import LoraLibrary
from taskfuse.routing.modules import route
from taskfuse.routing.phatgoose import PhatgooseRouter, gate_matrix, standardize, train_gates
from tests.routing.test_arrow import library_dirs  # noqa: F401  (the fixture)


def test_routing_takes_the_top_k_standardised_affinities_and_never_an_absent_expert():
    gates = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    router = PhatgooseRouter(gates, top_k=2)
    token = torch.tensor([[3.0, 1.0, 0.0, 0.0]])
    c = router(token)
    assert c[0, 2] == 0  # the zero row: no gate here
    scores = standardize(token) @ standardize(gates[:2]).T / 2
    torch.testing.assert_close(c[0, :2], torch.softmax(scores[0], 0))
    assert PhatgooseRouter(gates, top_k=1)(token)[0].tolist() == [1.0, 0.0, 0.0]


def test_gates_learn_to_open_where_the_adapter_helps(library_dirs):
    from transformers import AutoModelForCausalLM
    base, adapters = library_dirs
    library = LoraLibrary.from_adapters(base, {"a": adapters[0], "b": adapters[1]})
    # the target: the model with adapter a fully applied; a gate at σ(0) = 0.5 misses half of it
    target_model = route(AutoModelForCausalLM.from_pretrained(base).eval(), library.without("b"),
                         lambda name, updates, module: FullOn())
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 128, (4, 8), generator=g)
    with torch.no_grad():
        target = target_model(input_ids=ids).logits

    def loss(model, ids_, mask, labels):
        return ((model(input_ids=ids_).logits - target) ** 2).mean()

    def batches():
        while True:
            yield ids, None, None

    make = lambda: AutoModelForCausalLM.from_pretrained(base)  # noqa: E731
    before = train_gates(make, library, "a", batches(), loss, steps=0)
    after = train_gates(make, library, "a", batches(), loss, steps=60, lr=0.05)
    assert all(v.abs().sum() == 0 for v in before.values()) and set(after) == set(library.modules)

    def gated(gates):
        from taskfuse.routing.phatgoose import SigmoidGate
        single = library.without("b")

        def make_gate(name, updates, module):
            gate = SigmoidGate(module.in_features)
            gate.v.data.copy_(gates[name])
            return gate
        with torch.no_grad():
            return loss(route(make().eval(), single, make_gate), ids, None, None)
    assert gated(after) < 0.9 * gated(before)  # a per-token gate cannot open fully for every token
    matrix = gate_matrix(library, {"a": after}, next(iter(library.modules)), 64)
    assert matrix[1].abs().sum() == 0 and matrix[0].abs().sum() > 0


class FullOn(torch.nn.Module):
    def forward(self, tokens):
        return torch.ones(tokens.shape[0], 1)
