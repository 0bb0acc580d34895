"""Twin-Merging as a routed model: saved with its shared merge, exclusive parts and input router, and loaded back as
the same torch module."""
import copy

import pytest
import torch

from taskfuse.errors import UsageError
from taskfuse.routing.library import LoraLibrary
from taskfuse.routing.store import load_routed, save_routed
from taskfuse.routing.twin import TwinMerged, exclusive_library, train_router
from taskfuse.testing.checkpoints import build_model, perturb, save


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """A tiny BERT's task arithmetic of two perturbed copies as the shared model, their exclusive parts at rank 4,
    and a router trained to tell the two experts' inputs apart."""
    root = tmp_path_factory.mktemp("twin")
    base = build_model("bert", 0)
    experts = {f"t{i}": perturb(copy.deepcopy(base), seed=i + 1, scale=0.1).state_dict() for i in range(2)}
    shared = copy.deepcopy(base)
    b = base.state_dict()
    shared.load_state_dict({k: b[k] + 0.5 * sum(e[k] - b[k] for e in experts.values()) for k in b})
    save(shared, root / "shared")
    linear = {f"{n}.weight" for n, m in shared.named_modules() if isinstance(m, torch.nn.Linear)}
    library = exclusive_library(shared.state_dict(), experts, linear, 4, "task arithmetic 0.5")
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(40, 48, generator=generator)
    router = train_router(features, torch.arange(40) % 2, 2, steps=20)
    model = TwinMerged(copy.deepcopy(shared), library, router).eval()
    return model, library, root / "shared", shared


def test_a_twin_merged_model_saves_and_loads_back_exactly(twin, tmp_path):
    model, library, shared_dir, shared = twin
    save_routed(model, library, "twin", model.router_params, tmp_path / "routed", shared=shared_dir)
    assert (tmp_path / "routed" / "shared" / "config.json").exists()
    loaded = load_routed(tmp_path / "routed")
    assert isinstance(loaded, TwinMerged)
    ids = torch.randint(0, 128, (3, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).last_hidden_state, want,
                                   rtol=0, atol=0)
        alone = shared(input_ids=ids, attention_mask=mask).last_hidden_state
    assert not torch.allclose(want, alone, atol=1e-3)  # the exclusive parts are in the output


def test_the_shared_folder_goes_with_twin_merging_only(twin, tmp_path):
    model, library, shared_dir, _ = twin
    with pytest.raises(UsageError, match="shared model folder.*Fix"):
        save_routed(model, library, "twin", model.router_params, tmp_path / "a")
    plain = LoraLibrary(library.base, library.experts, library.modules)
    with pytest.raises(UsageError, match="shared model folder"):
        save_routed(model, plain, "arrow", {}, tmp_path / "b", shared=shared_dir)
    assert list(tmp_path.iterdir()) == []


def test_told_the_task_twin_merging_serves_that_tasks_exclusive_part_alone(twin):
    """use_task(t) gives every input exclusive part t at full weight, the shared model plus that part's B·A on each
    linear weight; None routes by the input again."""
    model, library, _, shared = twin
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        routed = model(input_ids=ids, attention_mask=mask).last_hidden_state
        want = {}
        for t in range(2):
            alone = copy.deepcopy(shared)
            for module, updates in library.modules.items():
                layer = alone.get_submodule(module)
                update = updates[library.experts[t]]
                layer.weight += update.b @ update.a
            want[t] = alone(input_ids=ids, attention_mask=mask).last_hidden_state
        for t in range(2):
            model.use_task(t)
            torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).last_hidden_state, want[t],
                                       rtol=1e-5, atol=1e-5)
        assert not torch.allclose(want[0], want[1], atol=1e-3)
        model.use_task(None)
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).last_hidden_state, routed, rtol=0, atol=0)
    with pytest.raises(UsageError, match="task 2 is not one of its 2 exclusive parts.*Fix"):
        model.use_task(2)
