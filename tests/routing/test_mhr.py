"""Multi-Head Routing / Poly over a LoRA library, checked against PEFT 0.21's Poly (peft.tuners.poly)."""
import copy
import warnings

import pytest
import torch

from taskfuse.errors import AdapterError
from taskfuse.routing.library import ExpertUpdate, LoraLibrary
from taskfuse.routing.mhr import adapt, mhr_modules, route_mhr, set_task_ids
from taskfuse.testing.checkpoints import build_model

TARGETS = ["q_proj", "v_proj", "up_proj"]


def peft_poly(base, tasks: int, skills: int, splits: int, r: int = 4):
    from peft import PolyConfig, get_peft_model
    torch.manual_seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(copy.deepcopy(base), PolyConfig(r=r, target_modules=TARGETS, n_tasks=tasks,
                                                               n_skills=skills, n_splits=splits, init_weights=False))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "module_logits" in name:
                p.copy_(torch.randn_like(p) * 2)
            elif "poly_lora" in name:
                p.mul_(0.5)
    return model.eval()


def library_of(poly) -> tuple[LoraLibrary, dict[str, torch.Tensor]]:
    """PEFT's skills as our library (its 1/r folded into B) and its logits per module, shaped (tasks, heads, skills)."""
    modules, logits = {}, {}
    for name, m in poly.named_modules():
        if hasattr(m, "poly_lora_A") and "default" in m.poly_lora_A:
            a, b = m.poly_lora_A["default"].detach(), m.poly_lora_B["default"].detach()
            splits, skills, _, r = a.shape
            own = name.removeprefix("base_model.model.")
            modules[own] = {f"s{s}": ExpertUpdate(a[:, s].reshape(-1, r).T.clone(),
                                                  (b[:, s].transpose(0, 1).reshape(r, -1).T / r).clone())
                            for s in range(skills)}
            logits[own] = m.poly_router["default"].module_logits.detach().view(-1, splits, skills)
    return LoraLibrary("base", [f"s{s}" for s in range(skills)], modules), logits


@pytest.mark.parametrize("splits", [1, 4])
def test_outputs_match_peft_poly(splits):
    base = build_model("llama", 0).eval()
    poly = peft_poly(base, tasks=3, skills=4, splits=splits)
    library, logits = library_of(poly)
    ours = route_mhr(copy.deepcopy(base), library, heads=splits, tasks=3).eval()
    for name, m in ours.named_modules():
        if m in mhr_modules(ours):
            m.logits.data.copy_(logits[name])
    ids = torch.randint(0, base.config.vocab_size, (5, 7), generator=torch.Generator().manual_seed(0))
    tasks = torch.tensor([0, 2, 1, 1, 0])
    set_task_ids(ours, tasks)
    with torch.no_grad():
        expected = poly.base_model(input_ids=ids, task_ids=tasks).logits  # PolyModel takes task_ids
        got = ours(input_ids=ids).logits
        plain = base(input_ids=ids).logits
    assert (expected - plain).abs().max() > 1e-3  # the skills change the output, so the comparison means something
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_one_dominant_skill_is_that_adapter_exactly_with_mixed_ranks_and_absent_modules():
    """Logits that select one skill in every head give back that adapter's own ΔW; a smaller rank is zero-padded
    and a module an adapter leaves alone is an all-zero skill."""
    g = torch.Generator().manual_seed(1)
    layer = torch.nn.Linear(8, 12)
    small = ExpertUpdate(torch.randn(2, 8, generator=g), torch.randn(12, 2, generator=g))
    large = ExpertUpdate(torch.randn(4, 8, generator=g), torch.randn(12, 4, generator=g))
    library = LoraLibrary("base", ["small", "large", "none"], {"proj": {"small": small, "large": large}})
    model = torch.nn.Sequential()
    model.add_module("proj", copy.deepcopy(layer))
    route_mhr(model, library, heads=4)
    module = mhr_modules(model)[0].eval()
    x = torch.randn(3, 8, generator=g)
    for chosen, update in ((0, small), (1, large)):
        module.logits.data.fill_(-40.0)
        module.logits.data[0, :, chosen] = 40.0
        with torch.no_grad():
            torch.testing.assert_close(module(x), layer(x) + update.apply(x), atol=1e-5, rtol=1e-5)


def test_heads_that_do_not_divide_the_module_are_refused():
    library = LoraLibrary("base", ["e"], {"proj": {"e": ExpertUpdate(torch.ones(2, 8), torch.ones(12, 2))}})
    model = torch.nn.Sequential()
    model.add_module("proj", torch.nn.Linear(8, 12))
    with pytest.raises(AdapterError, match="proj.*5 head blocks"):
        route_mhr(model, library, heads=5)


def test_adapting_the_routing_lowers_the_loss_and_leaves_the_skills_alone():
    g = torch.Generator().manual_seed(2)
    target = ExpertUpdate(torch.randn(2, 8, generator=g), torch.randn(4, 2, generator=g))
    other = ExpertUpdate(torch.randn(2, 8, generator=g), torch.randn(4, 2, generator=g))
    library = LoraLibrary("base", ["target", "other"], {"proj": {"target": target, "other": other}})
    layer = torch.nn.Linear(8, 4)
    model = torch.nn.Sequential()
    model.add_module("proj", copy.deepcopy(layer))
    route_mhr(model, library, heads=2)
    x = torch.randn(64, 8, generator=g)
    with torch.no_grad():
        y = layer(x) + target.apply(x)
    skills = [p.clone() for p in (mhr_modules(model)[0].skill_a, mhr_modules(model)[0].skill_b)]

    def loss(m, ids, mask, labels):
        return torch.nn.functional.mse_loss(m(ids), labels)

    model.eval()
    losses = adapt(model, ((x, None, y) for _ in range(60)), loss, steps=60, routing_lr=0.2)
    assert len(losses) == 60 and sum(losses[-5:]) < 0.5 * sum(losses[:5])
    assert not model.training and not any(p.requires_grad for p in model.parameters())  # handed back as it came
    module = mhr_modules(model)[0]
    assert torch.equal(module.skill_a, skills[0]) and torch.equal(module.skill_b, skills[1])
    weights = module.eval().mixing(1)[0]
    assert (weights[:, 0] > weights[:, 1]).all()  # every head learnt to prefer the adapter that made the data
    adapt(model, ((x, None, y) for _ in range(3)), loss, steps=3, routing_lr=0.2, skills_lr=1e-2)
    assert not torch.equal(module.skill_a, skills[0])


def test_an_adapted_mhr_model_saves_and_loads_back_exactly(tmp_path):
    from taskfuse.routing.store import load_routed, save_routed
    base = build_model("llama", 0).eval()
    library, _ = library_of(peft_poly(base, tasks=1, skills=3, splits=2))
    model = route_mhr(copy.deepcopy(base), library, heads=2, tasks=2)
    ids = torch.randint(0, base.config.vocab_size, (4, 6), generator=torch.Generator().manual_seed(5))

    def loss(m, x, mask, labels):
        return m(input_ids=x).logits.pow(2).mean()

    adapt(model, ((ids, None, None) for _ in range(2)), loss, steps=2, routing_lr=0.1, skills_lr=1e-2)
    save_routed(model.eval(), library, "mhr", {"heads": 2, "tasks": 2}, tmp_path / "routed")
    loaded = load_routed(tmp_path / "routed", copy.deepcopy(base))
    tasks = torch.tensor([1, 0, 1, 1])
    set_task_ids(model, tasks)
    set_task_ids(loaded, tasks)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0)
