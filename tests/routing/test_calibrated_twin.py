"""Calibrated Twin-Merging: the temperature fitted on held-out inputs spreads an overconfident router's weight where
the inputs cannot tell the tasks apart; the exclusive parts' scale runs from the shared model alone (0) to
Twin-Merging itself (1), one per part; a part at 0 is left out without changing the output; the search over the
parts' scales finds each part's best value and keeps a part at 0 unless it helps; the model saves to the routed-model
format with its temperature, scales and parts, and loads back exactly."""
import copy

import pytest
import torch

from taskfuse.routing.calibrated_twin import (ScaledTwin, fit_temperature, kept_parts, scaled_parts, search_part_scales,
                                              tempered)
from taskfuse.routing.store import load_routed, save_routed
from taskfuse.routing.twin import TwinMerged, exclusive_library, train_router
from taskfuse.testing.checkpoints import build_model, perturb, save


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


def twin_parts(parts: int):
    base = build_model("bert", 0)
    experts = {f"t{i}": perturb(copy.deepcopy(base), seed=i + 1, scale=0.1).state_dict() for i in range(parts)}
    linear = {f"{n}.weight" for n, m in base.named_modules() if isinstance(m, torch.nn.Linear)}
    library = exclusive_library(base.state_dict(), experts, linear, 4, "base")
    router = train_router(torch.randn(30, 48, generator=torch.Generator().manual_seed(1)), torch.arange(30) % parts,
                          parts, steps=10)
    ids = torch.randint(0, 128, (3, 7), generator=torch.Generator().manual_seed(5))
    return base, library, tempered(router, 2.0), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_each_part_has_its_own_scale_and_a_part_at_zero_is_left_out():
    base, library, router, batch = twin_parts(3)
    full = ScaledTwin(copy.deepcopy(base), library, router, scale=[0.0, 0.5, 1.0]).eval()
    kept = scaled_parts(base, library, router, [0.0, 0.5, 1.0])
    with torch.no_grad():
        out = full(**batch).last_hidden_state
        torch.testing.assert_close(kept(**batch).last_hidden_state, out)
        # the per-part scales are not one scale: part 1 at 0.5 and part 2 at 1 differ from both at 0.5 or at 1
        for same in (0.5, 1.0):
            full.scale = [0.0, same, same]
            assert not torch.allclose(full(**batch).last_hidden_state, out, atol=1e-5)
        alone = base.eval()(**batch).last_hidden_state
        torch.testing.assert_close(scaled_parts(base, library, router, [0.0] * 3)(**batch).last_hidden_state, alone)
    # the kept model holds only the parts it uses; the shared encoder it was given is not wrapped
    assert sum(b.numel() for b in kept.buffers()) < sum(b.numel() for b in full.buffers())
    assert not any("RoutedUpdate" in type(m).__name__ for m in base.modules())
    with pytest.raises(ValueError, match="2 scales for a library of 3"):
        scaled_parts(base, library, router, [1.0, 1.0])


def test_the_search_finds_each_parts_best_value_and_leaves_useless_parts_at_zero():
    target = (1.0, 0.0, 0.25, 0.5)
    calls = []

    def score(scales):  # separable: each part's best value is its target's; part 1 gains nothing from any value
        calls.append(scales)
        return -sum((s - t) ** 2 for s, t in zip(scales, target))

    scales, trials = search_part_scales(score, order=[2, 0, 1, 3], parts=4)
    assert scales == target
    assert trials[0] == {"scales": [0.0] * 4, "score": -sum(t * t for t in target)}
    assert len(trials) == len(calls) == 1 + 4 * 3
    # parts are searched in the order given, each with the earlier parts' choices held
    assert calls[1:4] == [(0.0, 0.0, v, 0.0) for v in (0.25, 0.5, 1.0)]
    assert calls[4] == (0.25, 0.0, 0.25, 0.0)
    # a value that only ties the current score is not taken
    flat, _ = search_part_scales(lambda s: 0.0, order=[0, 1], parts=2)
    assert flat == (0.0, 0.0)


def test_the_calibrated_model_saves_with_its_temperature_scales_and_parts_and_loads_back_exactly(tmp_path):
    base, library, router, batch = twin_parts(3)
    save(base, tmp_path / "shared")
    scales = [0.0, 0.25, 1.0]
    model = scaled_parts(base, library, router, scales)
    save_routed(model, kept_parts(library, scales), "twin_calibrated", model.stored_params(), tmp_path / "routed",
                shared=tmp_path / "shared")
    loaded = load_routed(tmp_path / "routed")
    assert isinstance(loaded, ScaledTwin) and loaded.parts == [1, 2] and loaded.scale == scales
    assert loaded.router_params["experts"] == 3  # the router still weighs all three parts; two are held
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).last_hidden_state, model(**batch).last_hidden_state,
                                   rtol=0, atol=0)
        # the temperature came back with the router (a model with the untempered router differs)
        untempered = ScaledTwin(copy.deepcopy(base), kept_parts(library, scales), tempered(router[:-1], 1.0),
                                scales, [1, 2]).eval()
        assert not torch.allclose(untempered(**batch).last_hidden_state, model(**batch).last_hidden_state,
                                  atol=1e-6)
