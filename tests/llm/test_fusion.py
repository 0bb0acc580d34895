"""Dynamic Logits Fusion and proxy tuning on tiny real Llamas: with the large model equal to the small one, the
fused distribution at α = 1 is the expert's own, and the two-way KL matching finds exactly α = 1, so both modes
answer as the expert does; an expert that did not move gets α = 0; with two experts the one that moves furthest
from the small model on the context is applied."""
import pytest
import torch

from taskfuse.llm.evaluate import prompt_ids
from taskfuse.llm.fusion import ALPHAS, FusionTrace, dynamic_alpha, evaluate_fused, fuse, fused_greedy, kl
from taskfuse.testing.checkpoints import perturb
from taskfuse.testing.tiny_llm import save_tiny_causal_lm, tiny_causal_lm


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = save_tiny_causal_lm(tmp_path_factory.mktemp("fusion") / "base", "llama", seed=5)
    base = AutoModelForCausalLM.from_pretrained(folder).eval()
    rows = base.config.vocab_size
    # fine-tunes of the base: the same seeded initialisation, then moved
    experts = [perturb(tiny_causal_lm("llama", rows, seed=5), seed=20 + i, scale=0.3).eval() for i in range(2)]
    return base, experts, AutoTokenizer.from_pretrained(folder)


def greedy_alone(model, tok, prompt, max_new):
    out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new, do_sample=False,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[0, len(prompt):].tolist()
    return out[:out.index(tok.eos_token_id)] if tok.eos_token_id in out else out


@pytest.mark.parametrize("mode", ["proxy", "dynamic"])
def test_large_equal_to_small_gives_the_experts_answers(models, mode):
    base, experts, tok = models
    prompts = [prompt_ids(tok, text) for text in ("Tell me a fortune", "What is a noun?", "Say something wise")]
    trace = FusionTrace()
    replies = fused_greedy(base, base, experts[:1], prompts, 6, tok.eos_token_id, tok.pad_token_id, mode, trace)
    assert replies == [greedy_alone(experts[0], tok, p, 6) for p in prompts]
    assert all(torch.allclose(a, torch.ones_like(a)) for a in trace.alphas)


def test_an_expert_that_did_not_move_gets_alpha_zero():
    torch.manual_seed(0)
    large, small = torch.randn(3, 50).log_softmax(-1), torch.randn(3, 50).log_softmax(-1)
    alpha, shift = dynamic_alpha(large, small, small.clone())
    assert torch.equal(alpha, torch.zeros(3)) and torch.allclose(shift, torch.zeros(3), atol=1e-6)
    assert (kl(large, small) > 0).all() and ALPHAS[0] == 0 and ALPHAS[-1] == 2


def test_the_expert_that_moves_furthest_is_applied():
    torch.manual_seed(1)
    small = torch.randn(2, 40).log_softmax(-1)
    near = (small + 0.01 * torch.randn(2, 40)).log_softmax(-1)
    far = (small + 2.0 * torch.randn(2, 40)).log_softmax(-1)
    for mode in ("proxy", "dynamic"):
        trace = FusionTrace()
        fuse(small, small, [near, far], mode, trace)
        assert trace.experts[0].tolist() == [1, 1]


def test_cli_generate_with_an_adapter_expert(models, tmp_path):
    from peft import LoraConfig, get_peft_model
    from typer.testing import CliRunner

    from taskfuse.cli.main import app
    base, _, tok = models
    folder = tmp_path / "base"
    base.save_pretrained(folder)
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    lora.unload()
    result = CliRunner().invoke(app, ["generate", "--prompt", "Tell me a fortune", "--large", str(folder),
                                      "--small", str(folder), "--expert", f"{folder}+{tmp_path / 'adapter'}",
                                      "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    assert "(alpha, expert) per token: [(1.0, 0)" in result.output and "the large model decoding alone" in result.output


def test_fused_scores_equal_the_experts_when_large_is_small(models):
    from taskfuse.llm.evaluate import evaluate
    from taskfuse.llm.tasks import Example, LLMTask
    base, experts, tok = models
    examples = tuple(Example(f"Is fortune {i} wise?" + " really" * (i % 3), i % 2) for i in range(6))
    task = LLMTask("toy", ("yes", "no"), {"test": examples}, "0" * 64)
    assert evaluate_fused(base, base, experts[:1], tok, task, "test", "dynamic", batch=4) == \
        evaluate(experts[0], tok, task, "test", batch=4)


def test_cli_generate_routed_by_example_prompts(models, tmp_path):
    """--route-by: each prompt goes to the expert whose example prompts it resembles, and with the large model the
    small one its reply is that expert's own greedy reply."""
    import json

    from typer.testing import CliRunner

    from taskfuse.cli.main import app
    base, experts, tok = models
    folders = []
    for name, model in (("base", base), ("e0", experts[0]), ("e1", experts[1])):
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
        folders.append(str(tmp_path / name))
    examples = {"e0": ["Tell me a fortune", "Tell me a fortune please", "Tell me another fortune",
                       "Tell me my fortune today"],
                "e1": ["What is a noun?", "What is a verb?", "What is a noun phrase?", "What is an adjective?"]}
    files = []
    for name, prompts in examples.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        files += ["--route-by", str(tmp_path / f"{name}.jsonl")]
    prompts = ["What is a noun?", "Tell me a fortune"]
    result = CliRunner().invoke(app, ["generate", *sum((["--prompt", p] for p in prompts), []),
                                      "--large", folders[0], "--small", folders[0], "--expert", folders[1],
                                      "--expert", folders[2], *files, "--max-new-tokens", "5"])
    assert result.exit_code == 0, result.output
    assert "routed to expert 1" in result.output and "routed to expert 0" in result.output
    answers = result.output.split("> ")[1:]
    for text, owner, answer in zip(prompts, (experts[1], experts[0]), answers):
        reply = tok.decode(greedy_alone(owner, tok, prompt_ids(tok, text), 5), skip_special_tokens=True)
        assert answer.split("\n")[1] == reply
    assert "routed by the prompt" in result.output

    one_file = CliRunner().invoke(app, ["generate", "--prompt", "x", "--large", folders[0], "--small", folders[0],
                                        "--expert", folders[1], "--expert", folders[2], *files[:2]])
    assert one_file.exit_code != 0 and "1 --route-by file(s) for 2 --expert(s)" in one_file.output
    (tmp_path / "bad.jsonl").write_text('{"prompt": "fine"}\n{"answer": "no prompt"}\n')
    bad = CliRunner().invoke(app, ["generate", "--prompt", "x", "--large", folders[0], "--small", folders[0],
                                   "--expert", folders[1], "--route-by", str(tmp_path / "bad.jsonl")])
    assert bad.exit_code != 0 and "bad.jsonl:2" in bad.output
