"""MoE upcycling into Mixtral (Llama base), Qwen2-MoE and Qwen3-MoE (Qwen bases): the output loads with
AutoModelForCausalLM and generates; experts that all equal the base reproduce the base exactly (whatever the router
picks, the picked experts' weights sum to one, and Qwen2-MoE's shared expert is silent); the hidden router sends an
expert's own prompt to that expert; bad inputs are refused before anything is written."""
import pytest
import torch

from taskfuse.errors import IncompatibleInputsError, SpecError
from taskfuse.programs.moe import load_moe_spec, upcycle
from taskfuse.testing.checkpoints import perturb
from taskfuse.testing.tiny_llm import save_tiny_causal_lm, tiny_causal_lm

PROMPTS = ["The cat sat on the mat and purred.", "SELECT name FROM users WHERE id = 42;",
           "Ich bin ein Berliner, sagte er."]


@pytest.fixture
def family(moe_family):
    return moe_family


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


@pytest.mark.parametrize("arch, architecture", [("qwen2", "Qwen2MoeForCausalLM"), ("qwen3", "Qwen3MoeForCausalLM")])
def test_qwen_bases_become_their_own_moe_family(arch, architecture, tmp_path):
    base = save_tiny_causal_lm(tmp_path / "base", arch, seed=1, tie=False)
    summary = upcycle(spec(base, [base, base]), tmp_path / "moe")
    moe, tok = load(tmp_path / "moe")
    dense, _ = load(base)
    assert type(moe).__name__ == architecture and summary["format"] == moe.config.model_type
    ids = tok(PROMPTS[2], return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(moe(ids).logits, dense(ids).logits, rtol=1e-4, atol=1e-4)
    assert moe.generate(ids, max_new_tokens=4, do_sample=False).shape[1] == ids.shape[1] + 4


def test_qwen2_shared_expert_from_the_base(tmp_path):
    from safetensors import safe_open
    base = save_tiny_causal_lm(tmp_path / "base", "qwen2", seed=2, tie=False)
    experts = [tmp_path / "e0", tmp_path / "e1"]
    for i, folder in enumerate(experts):
        perturb(tiny_causal_lm("qwen2", load(base)[0].config.vocab_size, seed=2, tie=False), seed=i,
                scale=0.05).save_pretrained(folder)
    upcycle(spec(base, experts, shared_expert="base"), tmp_path / "moe")
    with safe_open(tmp_path / "moe" / "model.safetensors", "pt") as moe, \
            safe_open(base / "model.safetensors", "pt") as dense:
        for module in ("gate_proj", "up_proj", "down_proj"):
            assert torch.equal(moe.get_tensor(f"model.layers.1.mlp.shared_expert.{module}.weight"),
                               dense.get_tensor(f"model.layers.1.mlp.{module}.weight"))
        assert torch.equal(moe.get_tensor("model.layers.0.mlp.experts.1.up_proj.weight"),
                           load(experts[1])[0].model.layers[0].mlp.up_proj.weight.detach())
    moe_model, tok = load(tmp_path / "moe")
    assert moe_model.config.shared_expert_intermediate_size == moe_model.config.intermediate_size
    assert moe_model.generate(tok(PROMPTS[0], return_tensors="pt").input_ids, max_new_tokens=2).shape[1] > 2


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
    with pytest.raises(IncompatibleInputsError, match="is a 'bert' model and the base .* a 'llama' one"):
        upcycle(spec(base, [experts[0], bert_family[0]]), tmp_path / "a")
    from transformers import AutoModelForCausalLM, LlamaConfig
    narrow = tmp_path.parent / f"{tmp_path.name}-narrow"
    config = load(base)[0].config.to_dict() | {"intermediate_size": 80}
    AutoModelForCausalLM.from_config(LlamaConfig(**config)).save_pretrained(narrow)
    with pytest.raises(IncompatibleInputsError, match="fine-tune of the base's architecture"):
        upcycle(spec(base, [experts[0], narrow]), tmp_path / "a")
    with pytest.raises(IncompatibleInputsError, match="from llama, mistral, qwen2, qwen3 bases"):
        upcycle(spec(bert_family[0], experts), tmp_path / "b")
    qwen = save_tiny_causal_lm(tmp_path.parent / f"{tmp_path.name}-qwen", "qwen2", seed=0, tie=False)
    with pytest.raises(IncompatibleInputsError, match="is a 'qwen2' model and the base .* a 'llama' one"):
        upcycle(spec(base, [experts[0], qwen]), tmp_path / "c")
    with pytest.raises(SpecError, match="shared_expert: base needs a Qwen2 base"):
        upcycle(spec(base, experts, shared_expert="base"), tmp_path / "d")
    with pytest.raises(SpecError, match="experts_per_token 4 exceeds"):
        spec(base, experts, experts_per_token=4)
    with pytest.raises(SpecError, match="positive_prompts"):
        load_moe_spec({"base": str(base), "experts": [{"path": str(e)} for e in experts]})
    assert list(tmp_path.iterdir()) == []


COMPLETIONS = [" Meow meow meow.", " 42 rows returned.", " Jawohl, sagte sie."]


def example_spec(base, experts, **extra):
    return {"base": str(base), "dtype": "float32", "experts": [
        {"path": str(e), "positive_prompts": [p], "examples": [{"prompt": p, "completion": c}]}
        for e, p, c in zip(experts, PROMPTS, COMPLETIONS)], **extra}


def completion_loss(moe, tok) -> float:
    total = 0.0
    for prompt, completion in zip(PROMPTS, COMPLETIONS):
        p, c = tok(prompt).input_ids, tok(completion, add_special_tokens=False).input_ids
        ids = torch.tensor([p + c])
        labels = torch.tensor([[-100] * len(p) + c])
        with torch.no_grad():
            total += moe(input_ids=ids, labels=labels).loss.item()
    return total


@pytest.mark.parametrize("routing_loss", [0.0, 1.0])
def test_tuning_the_routers_through_the_moe_lowers_its_loss_and_changes_only_the_routers(family, tmp_path,
                                                                                         routing_loss):
    from safetensors.torch import load_file
    base, experts = family
    upcycle(load_moe_spec(example_spec(base, experts)), tmp_path / "plain")
    summary = upcycle(load_moe_spec(example_spec(base, experts, tune_router={
        "steps": 40, "lr": 1e-2, "batch_size": 3, "routing_loss": routing_loss})), tmp_path / "tuned")
    record = summary["tune_router"]
    assert len(record["losses"]) == 40 and record["examples"] == [1, 1, 1]
    plain, tuned = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "tuned" / "model.safetensors")
    assert plain.keys() == tuned.keys()
    changed = {k for k in plain if not torch.equal(plain[k], tuned[k])}
    assert changed and all(k.endswith("block_sparse_moe.gate.weight") for k in changed)
    before, tok = load(tmp_path / "plain")
    after, _ = load(tmp_path / "tuned")
    assert completion_loss(after, tok) < completion_loss(before, tok)


def test_tuning_the_routers_needs_examples_for_every_expert(family, tmp_path):
    base, experts = family
    bad = example_spec(base, experts, tune_router={"steps": 1})
    bad["experts"][1]["examples"] = []
    with pytest.raises(SpecError, match="tune_router needs examples"):
        load_moe_spec(bad)


def test_the_moe_command_tunes_and_prints_plain_progress_in_a_log(family, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from taskfuse.cli.main import app
    base, experts = family
    spec_file = tmp_path / "moe.yaml"
    spec_file.write_text(yaml.safe_dump(example_spec(base, experts, tune_router={"steps": 3, "batch_size": 2})))
    result = CliRunner().invoke(app, ["moe", str(spec_file), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "upcycling 3/3" in result.output and "tuned 3 steps" in result.output  # not a terminal: plain lines
    assert load(tmp_path / "out")[0].config.num_local_experts == 3


def test_a_prompt_that_writes_its_own_begin_token_gets_it_once():
    from tokenizers.processors import TemplateProcessing

    from taskfuse.programs.text_data import prompt_tokens
    from taskfuse.testing.tiny_llm import byte_bpe_tokenizer
    tok = byte_bpe_tokenizer()
    bos = tok.bos_token
    tok._tokenizer.post_processor = TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.bos_token_id)])
    assert prompt_tokens(tok, "hello")[:2] == [tok.bos_token_id, tok("hello", add_special_tokens=False).input_ids[0]]
    templated = prompt_tokens(tok, f"{bos}[INST] hello")  # a Llama-2 style template wrote the begin token itself
    assert templated[0] == tok.bos_token_id and templated[1] != tok.bos_token_id


def test_router_tuning_runs_the_shared_opening_once_with_the_plain_forward_passs_losses_and_gradients(family,
                                                                                                    tmp_path):
    """The rows' common opening runs once at batch size 1, yet the next-token loss, the routing loss (the opening's
    router logits counted once per row, against that row's expert) and the routers' gradients are the plain
    forward pass's."""
    from taskfuse.llm.decoding import shared_opening
    from taskfuse.llm.zoo import reply_batch
    from taskfuse.programs.moe_tuning import _losses, _moe_block
    base, experts = family
    upcycle(load_moe_spec(example_spec(base, experts)), tmp_path / "moe")
    model, tok = load(tmp_path / "moe")
    model.requires_grad_(False)
    routers = [_moe_block(layer).gate.weight for layer in model.model.layers]
    for router in routers:
        router.requires_grad_(True)
    pairs = [(tok("You are a helpful assistant. Answer in a few words: " + p).input_ids,
              tok(c, add_special_tokens=False).input_ids) for p, c in zip(PROMPTS, COMPLETIONS)]
    ids, labels, mask = reply_batch(pairs, tok)
    owner = torch.arange(len(pairs))[:, None].expand_as(ids)
    shared = shared_opening([p for p, _ in pairs])
    assert shared >= 8
    runs = []
    for opening in (0, shared):
        for router in routers:
            router.grad = None
        next_token, routing = _losses(model, ids, mask, labels, owner, True, opening)
        (next_token + routing).backward()
        runs.append((next_token.detach(), routing.detach(), [router.grad.clone() for router in routers]))
    (plain_next, plain_routing, plain_grads), (next_token, routing, grads) = runs
    torch.testing.assert_close(next_token, plain_next, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(routing, plain_routing, rtol=1e-5, atol=1e-6)
    assert routing > 0
    for got, want in zip(grads, plain_grads):
        assert want.abs().max() > 0
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_router_inputs_run_in_batches_with_the_shared_opening_once_and_stand_for_every_token(family):
    """Rows of the opening the prompts share stand for every prompt: the weighted rows are the multiset of every
    prompt token's hidden state in every layer, as one plain forward pass per prompt gives them."""
    from taskfuse.io.checkpoint import Checkpoint
    from taskfuse.programs.moe import _load_dense, _router_inputs, _token_mean
    model, tok = _load_dense(Checkpoint.open(str(family[0])))
    sharing = ["Answer with one word. " * 3 + p for p in PROMPTS]
    for prompts, batch in ((sharing, 32), (sharing + [PROMPTS[0]], 2)):  # the second batch of 2 shares nothing
        rows, tokens = _router_inputs(model, tok, prompts, batch=batch)
        plain = []
        for prompt in prompts:
            captured = []
            hooks = [layer.post_attention_layernorm.register_forward_hook(lambda _m, _i, out: captured.append(out[0]))
                     for layer in model.model.layers]
            with torch.no_grad():
                model(**tok(prompt, return_tensors="pt"))
            for hook in hooks:
                hook.remove()
            plain.append(torch.stack(captured))
        plain = torch.cat(plain, 1)
        assert tokens.sum() == plain.shape[1] and rows.shape[1] < plain.shape[1]  # fewer rows, every token counted
        torch.testing.assert_close(_token_mean(rows, tokens), plain.mean(1), atol=1e-5, rtol=0)
        # and row by row: each plain token's state is among the rows
        distance = torch.cdist(plain[-1], rows[-1], compute_mode="donot_use_mm_for_euclid_dist").min(1).values
        assert distance.max() < 1e-4
