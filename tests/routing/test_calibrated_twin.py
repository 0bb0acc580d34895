"""Calibrated Twin-Merging: the temperature fitted on held-out inputs spreads an overconfident router's weight where
the inputs cannot tell the tasks apart; the exclusive parts' scale runs from the shared model alone (0) to
Twin-Merging itself (1)."""
import copy

import torch

from taskfuse.routing.calibrated_twin import ScaledTwin, fit_temperature, tempered
from taskfuse.routing.twin import TwinMerged, exclusive_library, train_router
from taskfuse.testing.checkpoints import build_model, perturb


def test_an_overconfident_router_on_shared_inputs_gets_a_high_temperature():
    generator = torch.Generator().manual_seed(0)
    # two tasks drawn from the same inputs: the router can only memorise which task each training input had
    features, held_out = torch.randn(60, 16, generator=generator), torch.randn(200, 16, generator=generator)
    router = train_router(features, torch.arange(60) % 2, 2, steps=300)
    temperature, losses = fit_temperature(router, held_out, torch.arange(200) % 2)
    assert temperature > 1 and losses[temperature] < losses[1.0]
    with torch.no_grad():
        spread = torch.softmax(tempered(router, temperature)(held_out), -1).max(1).values.mean()
        sharp = torch.softmax(router(held_out), -1).max(1).values.mean()
    assert spread < sharp
    # inputs that do tell the tasks apart keep a router that needs no softening
    labels = torch.arange(200) % 2
    apart = held_out + 4 * torch.nn.functional.one_hot(labels, 16).float()
    clear = train_router(apart[:100], labels[:100], 2, steps=300)
    assert fit_temperature(clear, apart[100:], labels[100:])[0] <= 1


def test_the_scale_runs_from_the_shared_model_to_twin_merging():
    base = build_model("bert", 0)
    experts = {f"t{i}": perturb(copy.deepcopy(base), seed=i + 1, scale=0.1).state_dict() for i in range(2)}
    shared = copy.deepcopy(base)
    linear = {f"{n}.weight" for n, m in shared.named_modules() if isinstance(m, torch.nn.Linear)}
    library = exclusive_library(shared.state_dict(), experts, linear, 4, "base")
    router = train_router(torch.randn(20, 48, generator=torch.Generator().manual_seed(1)), torch.arange(20) % 2, 2,
                          steps=10)
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    scaled = ScaledTwin(copy.deepcopy(shared), library, tempered(router, 1.0)).eval()
    plain = TwinMerged(copy.deepcopy(shared), library, router).eval()
    with torch.no_grad():
        alone = shared(input_ids=ids, attention_mask=mask).last_hidden_state
        full = plain(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(scaled(input_ids=ids, attention_mask=mask).last_hidden_state, full)
        scaled.scale = 0.0
        torch.testing.assert_close(scaled(input_ids=ids, attention_mask=mask).last_hidden_state, alone)
        scaled.scale = 0.5
        half = scaled(input_ids=ids, attention_mask=mask).last_hidden_state
    assert not torch.allclose(half, alone, atol=1e-4) and not torch.allclose(half, full, atol=1e-4)
