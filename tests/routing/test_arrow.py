"""Arrow routing over a LoRA library, checked against PEFT 0.21's implementation (peft.tuners.lora.arrow)."""
import warnings

import pytest
import torch

from taskfuse.routing.arrow import ArrowRouter, prototype
from taskfuse.routing.library import ExpertUpdate, LoraLibrary
from taskfuse.routing.modules import route
from taskfuse.testing.checkpoints import build_model, save

TARGETS = ["q_proj", "v_proj", "up_proj"]


def dominant_adapter(base_dir, out, seed):
    """A LoRA whose update has one clearly dominant direction per layer, so that PEFT's 15 power iterations and our
    exact SVD find the same prototype."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                               LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_A" in name:
                    p.copy_(torch.randn_like(p) * 0.1)
                    p[0] *= 6
                elif "lora_B" in name:
                    p.copy_(torch.randn_like(p) * 0.1)
                    p[:, 0] *= 6
        model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def library_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("arrow")
    base = save(build_model("llama", 0), root / "base")
    return base, [dominant_adapter(base, root / f"a{i}", 10 + i) for i in range(4)]


def test_the_prototype_is_the_top_right_singular_vector():
    g = torch.Generator().manual_seed(0)
    update = ExpertUpdate(torch.randn(3, 20, generator=g), torch.randn(12, 3, generator=g))
    _, _, vh = torch.linalg.svd(update.b @ update.a)
    assert abs(torch.dot(prototype(update), vh[0])) == pytest.approx(1.0, abs=1e-5)


def test_router_keeps_top_k_and_mixes_by_softmax():
    router = ArrowRouter(torch.eye(4), top_k=2, temperature=0.5)
    c = router(torch.tensor([[3.0, -2.0, 0.5, 0.0]]))
    assert c[0, 2] == 0 and c[0, 3] == 0
    expected = torch.softmax(torch.tensor([3.0, 2.0]) / 0.5, 0)
    torch.testing.assert_close(c[0, :2], expected)


@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_arrow_matches_peft(library_dirs, top_k):
    from peft import ArrowConfig, create_arrow_model
    from transformers import AutoModelForCausalLM
    base, adapters = library_dirs
    ids = torch.randint(0, 128, (3, 9), generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = create_arrow_model(AutoModelForCausalLM.from_pretrained(base), [str(a) for a in adapters],
                                    ArrowConfig(top_k=top_k, router_temperature=1.0, rng_seed=0)).eval()
        with torch.no_grad():
            expected = theirs(input_ids=ids).logits
    library = LoraLibrary.from_adapters(base, {f"e{i}": a for i, a in enumerate(adapters)})
    ours = route(AutoModelForCausalLM.from_pretrained(base).eval(), library,
                 lambda name, updates, module: ArrowRouter.for_updates(updates, module.in_features, top_k))
    with torch.no_grad():
        got = ours(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(base).eval()(input_ids=ids).logits
    assert (expected - plain).abs().max() > 1e-2  # the routed updates matter
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_one_expert_routed_is_that_adapter(library_dirs):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base, adapters = library_dirs
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(2))
    library = LoraLibrary.from_adapters(base, {"only": adapters[0]})
    ours = route(AutoModelForCausalLM.from_pretrained(base).eval(), library,
                 lambda name, updates, module: ArrowRouter.for_updates(updates, module.in_features, 3))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapters[0]).eval()(
            input_ids=ids).logits
        torch.testing.assert_close(ours(input_ids=ids).logits, expected, rtol=0, atol=1e-5)


def test_a_routed_model_saves_and_loads_back_exactly(tmp_path, library_dirs):
    from transformers import AutoModelForCausalLM

    from taskfuse.errors import CheckpointError
    from taskfuse.routing.store import load_routed, save_routed
    base, adapters = library_dirs
    library = LoraLibrary.from_adapters(base, {f"e{i}": a for i, a in enumerate(adapters)})
    model = route(AutoModelForCausalLM.from_pretrained(base).eval(), library,
                  lambda name, updates, module: ArrowRouter.for_updates(updates, module.in_features, 2, 0.5))
    save_routed(model, library, "arrow", {"top_k": 2, "temperature": 0.5}, tmp_path / "routed")
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(load_routed(tmp_path / "routed")(input_ids=ids).logits,
                                   model(input_ids=ids).logits, rtol=0, atol=0)
    (tmp_path / "routed" / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(CheckpointError, match="taskfuse-routed"):
        load_routed(tmp_path / "routed")


@pytest.mark.parametrize("ranks", [(3, 3, 3), (2, 5, 3)])
def test_a_routed_module_adds_the_coefficient_weighted_updates(ranks):
    from torch import nn

    from taskfuse.routing.modules import RoutedUpdate
    g = torch.Generator().manual_seed(5)
    base = nn.Linear(6, 4)
    updates = [ExpertUpdate(torch.randn(r, 6, generator=g), torch.randn(4, r, generator=g)) for r in ranks]
    updates.insert(1, None)  # an expert that leaves this module alone
    fixed = torch.tensor([0.5, 0.9, 0.2, 0.3])

    class Fixed(nn.Module):
        def forward(self, tokens):
            return fixed.expand(tokens.shape[0], -1)

    module = RoutedUpdate(base, updates, Fixed())
    x = torch.randn(2, 5, 6, generator=g)
    expected = base(x) + sum(c * (x @ u.a.T @ u.b.T) for c, u in zip(fixed, updates) if u is not None)
    torch.testing.assert_close(module(x), expected)
    assert module.stacked == (len(set(ranks)) == 1)
