"""MoE upcycling into Mixtral: the output loads with AutoModelForCausalLM and generates; experts that all equal the
base reproduce the base exactly (whatever the router picks, the picked experts' weights sum to one); the hidden
router sends an expert's own prompt to that expert; bad inputs are refused before anything is written."""
import pytest
import torch

from taskfuse.errors import IncompatibleInputsError, SpecError
from taskfuse.programs.moe import load_moe_spec, upcycle
from taskfuse.testing.checkpoints import perturb
from taskfuse.testing.tiny_llm import save_tiny_causal_lm, tiny_causal_lm

PROMPTS = ["The cat sat on the mat and purred.", "SELECT name FROM users WHERE id = 42;",
           "Ich bin ein Berliner, sagte er."]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("moe")
    base = save_tiny_causal_lm(root / "base", "llama", seed=0, tie=False)
    experts = []
    for i in range(3):
        model = perturb(tiny_causal_lm("llama", 384, seed=0, tie=False), seed=10 + i, scale=0.05)
        model.save_pretrained(root / f"expert{i}")
        experts.append(root / f"expert{i}")
    return base, experts


def spec(base, experts, **extra):
    return load_moe_spec({"base": str(base), "experts": [{"path": str(e), "positive_prompts": [p]}
                                                         for e, p in zip(experts, PROMPTS)], "dtype": "float32",
                          **extra})


def load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def test_experts_equal_to_the_base_reproduce_it(family, tmp_path):
    base, _ = family
    upcycle(spec(base, [base, base, base]), tmp_path / "moe")
    moe, tok = load(tmp_path / "moe")
    dense, _ = load(base)
    assert type(moe).__name__ == "MixtralForCausalLM" and moe.config.num_local_experts == 3
    ids = tok(PROMPTS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(moe(ids).logits, dense(ids).logits, rtol=1e-4, atol=1e-4)
    assert moe.generate(ids, max_new_tokens=5, do_sample=False).shape[1] == ids.shape[1] + 5


def test_the_hidden_router_sends_an_experts_prompt_to_it(family, tmp_path):
    base, experts = family
    summary = upcycle(spec(base, experts), tmp_path / "moe")
    assert summary["router_init"] == "hidden"
    moe, tok = load(tmp_path / "moe")
    for e, prompt in enumerate(PROMPTS):
        with torch.no_grad():
            logits = moe(**tok(prompt, return_tensors="pt"), output_router_logits=True).router_logits[0]
        # layer 0 sees exactly the base's hidden states, which the router rows were built from
        assert logits.mean(0).argmax().item() == e


def test_the_trained_router_sends_every_token_of_an_experts_prompts_to_it(family, tmp_path):
    base, experts = family
    upcycle(spec(base, experts, router_init="trained", router_steps=300), tmp_path / "moe")
    moe, tok = load(tmp_path / "moe")
    for e, prompt in enumerate(PROMPTS):
        with torch.no_grad():
            logits = moe(**tok(prompt, return_tensors="pt"), output_router_logits=True).router_logits[0]
        assert (logits.argmax(-1) == e).float().mean() > 0.9  # token by token, not only on average


def test_random_router_and_top_1(family, tmp_path):
    base, experts = family
    upcycle(spec(base, experts, router_init="random", experts_per_token=1), tmp_path / "moe")
    moe, tok = load(tmp_path / "moe")
    assert moe.config.num_experts_per_tok == 1
    out = moe.generate(tok(PROMPTS[1], return_tensors="pt").input_ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > 3


def test_bad_inputs_are_refused_and_nothing_is_written(family, bert_family, tmp_path):
    base, experts = family
    with pytest.raises(IncompatibleInputsError, match="fine-tune of the base's architecture"):
        upcycle(spec(base, [experts[0], bert_family[0]]), tmp_path / "a")
    with pytest.raises(IncompatibleInputsError, match="Mixtral from llama, mistral"):
        upcycle(spec(bert_family[0], experts), tmp_path / "b")
    with pytest.raises(SpecError, match="experts_per_token 4 exceeds"):
        spec(base, experts, experts_per_token=4)
    with pytest.raises(SpecError, match="positive_prompts"):
        load_moe_spec({"base": str(base), "experts": [{"path": str(e)} for e in experts]})
    assert list(tmp_path.iterdir()) == []
