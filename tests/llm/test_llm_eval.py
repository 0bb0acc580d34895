"""The LLM benchmark's judge and zoo on a tiny real Llama with a real BPE tokenizer: the cached one-pass scorer
(the prompts' shared opening computed once) gives transformers' greedy generation and the likelihood ranking of
whole-sequence forward passes; an expert trains, lowers its loss and appears whole."""
import json

import pytest
import torch

from taskfuse.llm.decoding import alone, pad_id, prefill, reply_scores, shared_opening
from taskfuse.llm.evaluate import Score, evaluate, normalise, prompt_ids, reply_ids, score_batch
from taskfuse.llm.tasks import Example, LLMTask, answer_text, load_llm_task
from taskfuse.llm.zoo import RECORD, Recipe, train_expert
from taskfuse.testing.tiny_llm import save_tiny_causal_lm

ANSWERS = ("noun", "verb", "adjective phrase")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = save_tiny_causal_lm(tmp_path_factory.mktemp("llm") / "tiny", "llama", seed=3)
    return folder, AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def two_experts(tiny, tmp_path_factory):
    """Two toy tasks (the second's answers shifted by one), a LoRA expert for each, and a judge of both."""
    from taskfuse.llm.bench import Judge
    from taskfuse.llm.zoo import Expert
    folder = tiny[0]
    first = toy_task()
    second = LLMTask("toy2", ANSWERS, {k: tuple(Example(e.prompt.replace("fortune", "gloss"), (e.answer + 1) % 3)
                                                for e in v) for k, v in first.splits.items()}, "1" * 64)
    root, experts = tmp_path_factory.mktemp("experts"), {}
    for task in (first, second):
        train_expert(folder, task, Recipe(rank=4, steps=12, batch=4, lr=1e-2), root / task.name, threads=1)
        experts[task.name] = Expert(task.name, root / task.name, {})
    return first, second, experts, Judge(folder, [first, second])


def toy_task(n: int = 12) -> LLMTask:
    prompts = [f"Which part of speech is word number {i} of the fortune?" + " so" * (i % 5) for i in range(n)]
    examples = tuple(Example(p, i % len(ANSWERS)) for i, p in enumerate(prompts))
    return LLMTask("toy", ANSWERS, {"train": examples, "validation": examples[:6], "test": examples}, "0" * 64)


def whole_sequence_logprob(model, ids: list[int], reply: list[int]) -> float:
    with torch.no_grad():
        logits = model(torch.tensor([ids + reply])).logits[0].float().log_softmax(-1)
    return sum(logits[len(ids) - 1 + k, token].item() for k, token in enumerate(reply))


def test_one_pass_scorer_matches_generate_and_full_forward_passes(tiny):
    _, model, tok = tiny
    task = toy_task()
    prompts = [prompt_ids(tok, e.prompt) for e in task.splits["test"]]
    assert len({len(p) for p in prompts}) > 1  # mixed lengths: left padding and positions matter
    assert shared_opening(prompts) > 5  # the opening computed once, the rest padded after it
    replies = [reply_ids(tok, a) for a in task.answers]
    with torch.inference_mode():
        generated, choices = score_batch([model], alone, tok, prompts, replies)
    for prompt, text, choice in zip(prompts, generated, choices):
        expected = model.generate(torch.tensor([prompt]), max_new_tokens=max(map(len, replies)) + 1,
                                  do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        assert text == tok.decode(expected[0, len(prompt):], skip_special_tokens=True)
        scores = [whole_sequence_logprob(model, prompt, r) for r in replies]
        assert choice == max(range(len(scores)), key=scores.__getitem__)
    # every reply's log-likelihood itself, the replies of several lengths packed after each prompt in one row
    assert len({len(r) for r in replies}) > 1
    with torch.inference_mode():
        packed = reply_scores(prefill([model], prompts, pad_id(tok)), replies, alone)
    whole = torch.tensor([[whole_sequence_logprob(model, p, r) for r in replies] for p in prompts])
    torch.testing.assert_close(packed, whole, atol=1e-4, rtol=0)


def test_evaluate_counts_exact_matches_and_likelihood_choices(tiny):
    _, model, tok = tiny
    score = evaluate(model, tok, toy_task(), "test", batch=5)
    assert score.n == 12 and 0 <= score.exact_match <= 1 and 0 <= score.likelihood_accuracy <= 1
    # validation passes score exact match alone: the same greedy answers, no likelihood
    assert evaluate(model, tok, toy_task(), "test", batch=5, likelihood=False) == Score(score.exact_match, None, 12)
    assert normalise("  Noun. ") == "noun" and answer_text("noun.animal") == "animal"


def test_an_expert_trains_and_appears_whole(tiny, tmp_path):
    folder, _, _ = tiny
    out = tmp_path / "expert"
    train_expert(folder, toy_task(), Recipe(rank=4, steps=12, batch=4, lr=5e-3), out, threads=1)
    record = json.loads((out / RECORD).read_text())
    assert record["losses"][-1] < record["losses"][0]
    assert (out / "adapter_config.json").exists() and not list(tmp_path.glob(".expert.partial-*"))


def test_reply_loss_is_transformers_causal_lm_loss_with_or_without_the_shared_opening_run_once(tiny):
    from taskfuse.llm.zoo import reply_batch, reply_loss
    _, model, tok = tiny
    pairs = [(prompt_ids(tok, "What is a noun?"), reply_ids(tok, "noun")),
             (prompt_ids(tok, "Name a verb, please"), reply_ids(tok, "adjective phrase"))]
    ids, labels, mask = reply_batch(pairs, tok)
    shared = shared_opening([p for p, _ in pairs])
    assert shared >= 3  # the chat template's opening
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        torch.testing.assert_close(reply_loss(model, ids, mask, labels), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(reply_loss(model, ids, mask, labels, shared), expected, rtol=1e-5, atol=1e-6)


def test_the_prompt_opening_is_read_back_from_a_batch_and_batches_repeat_the_experts_draws(tiny):
    """What every learner on the experts' answers shares: the opening its loss runs once, found from the labels
    (nothing for a single row), and the seeded draws the experts trained on."""
    from taskfuse.llm.zoo import answer_pairs, prompt_opening, reply_batch, sampled_batches
    tok = tiny[2]
    pairs = answer_pairs(tok, toy_task())
    ids, labels, _ = reply_batch(pairs[:3], tok)
    assert prompt_opening(ids, labels) == shared_opening([p for p, _ in pairs[:3]]) >= 3
    assert prompt_opening(*reply_batch(pairs[:1], tok)[:2]) == 0
    first, again = sampled_batches(pairs, tok, 4, seed=1), sampled_batches(pairs, tok, 4, seed=1)
    drawn = [next(first) for _ in range(3)]
    assert all(torch.equal(a, b) for batch in drawn for a, b in zip(batch, next(again)))
    assert not torch.equal(drawn[0][0], drawn[1][0])  # a new draw each step


def test_builtin_tasks_are_short_questions_with_their_answers_listed():
    task = load_llm_task("wordnet_pos", limits={"test": 5})
    assert task.answers == ("adjective", "adverb", "noun", "verb") and len(task.splits["test"]) == 5
    assert all("Answer with one of: adjective, adverb, noun, verb." in e.prompt for e in task.splits["test"])
    assert len(load_llm_task("debian_section").splits["train"][0].prompt) < 400  # texts clipped


def test_the_benchmarks_arrow_row_with_one_expert_is_that_expert(tiny, tmp_path):
    """Arrow over a library of one adapter gives every token all of it: the routed model is base + ΔW, the merged
    expert, and the benchmark's scorer runs on it."""
    from types import SimpleNamespace

    from taskfuse.llm.bench import Judge
    folder, _, tok = tiny
    train_expert(folder, toy_task(), Recipe(rank=4, steps=6, batch=4, lr=5e-3), tmp_path / "expert", threads=1)
    judge = Judge(folder, [toy_task()])
    routed = judge.arrow(judge.library({"toy": SimpleNamespace(adapter=tmp_path / "expert")}), top_k=1)
    merged = judge.load_adapter(tmp_path / "expert")
    ids = torch.tensor([prompt_ids(tok, toy_task().splits["test"][0].prompt)])
    with torch.no_grad():
        torch.testing.assert_close(routed(ids).logits, merged(ids).logits, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(routed(ids).logits, judge.load(folder)(ids).logits, atol=1e-4)
    assert judge.model_scores(routed, "test") == judge.model_scores(merged, "test")


def test_the_benchmarks_atlas_row_learns_from_train_answers_and_writes_a_better_merge(tiny, two_experts, tmp_path):
    """The learned row on two toy experts (answers swapped between them), started from their task arithmetic: its
    loss on the train answers falls, it records the data it saw, and the written merge fits those answers better
    than the merge it started from."""
    from taskfuse.llm.learned import ATLAS, atlas_row
    from taskfuse.llm.zoo import reply_batch, reply_loss
    folder, _, tok = tiny
    first, second, experts, judge = two_experts
    start = judge.merge("task_arithmetic", {"scale": 0.5}, experts, tmp_path / "start")
    model, summary = atlas_row(judge, [first, second], experts, tmp_path / "atlas", tmp_path / "start",
                               {**ATLAS, "steps": 8, "lr": 0.2, "examples": 12})
    assert summary["losses"][-1] < summary["losses"][0]
    assert [d["examples"] for d in summary["data_seen"]] == [12, 12]
    assert {d["split"] for d in summary["data_seen"]} == {"train"}
    assert list(summary["coefficients"]) == ["start (start)", "toy", "toy2"]
    assert any(c["max"] != 0 for c in list(summary["coefficients"].values())[1:])
    pairs = [(prompt_ids(tok, e.prompt), reply_ids(tok, t.answers[e.answer])) for t in (first, second)
             for e in t.splits["train"]]
    ids, labels, mask = reply_batch(pairs, tok)
    with torch.no_grad():
        assert reply_loss(model, ids, mask, labels) < reply_loss(start, ids, mask, labels)
    import yaml
    replay = yaml.safe_load((tmp_path / "atlas" / "taskfuse_spec.yaml").read_text())
    assert replay["method"] == "task_arithmetic" and len(replay["overrides"]) > 0  # per-tensor weights
    assert replay["models"][0]["path"] == str(tmp_path / "start")  # the start merge, then the experts


def test_the_benchmarks_task_model_rows_serve_each_task_its_expert_where_nothing_is_lost(tiny, two_experts,
                                                                                          tmp_path):
    """Two toy experts (answers swapped between them): Twin-Merging's exclusive parts at rank 32 hold each expert's
    whole difference from the shared merge (rank 8 here), so each task's model is its expert; the router, trained on
    the train prompts labelled by task, sends every test prompt to its own part; EMR-Merging of one expert is that
    expert (one elected vector, a full mask, rescaler 1)."""
    from dataclasses import asdict

    from taskfuse.llm.bench import Judge
    from taskfuse.llm.task_models import (TWIN_GIVEN_ROW, TWIN_ROW, emr_row, full_states, prompt_features,
                                          routed_scores, twin_models, twin_rows)
    folder, _, tok = tiny
    first, second, experts, judge = two_experts
    judge.merge("task_arithmetic", {"scale": 0.5}, experts, tmp_path / "shared")
    states = full_states(judge, [first, second], experts)
    model, shared_state, folded, _ = twin_models(judge, states, tmp_path / "shared")
    ids = torch.tensor([prompt_ids(tok, first.splits["test"][0].prompt)])
    with torch.no_grad():
        shared_logits = model(ids).logits
        for task in (first, second):
            model.load_state_dict(folded[task.name])
            expert = judge.load_adapter(experts[task.name].adapter)
            torch.testing.assert_close(model(ids).logits, expert(ids).logits, rtol=1e-4, atol=1e-4)
            assert not torch.allclose(model(ids).logits, shared_logits, atol=1e-4)
    own = judge.model_scores(judge.load_adapter(experts["toy"].adapter), "test")
    rows, summaries = twin_rows(judge, [first, second], states, tmp_path / "shared",
                                {"method": "task_arithmetic", "params": {"scale": 0.5}})
    assert summaries[TWIN_ROW]["router_test_picks"] == {"toy": {"toy": 1.0}, "toy2": {"toy2": 1.0}}
    assert rows[TWIN_ROW] == rows[TWIN_GIVEN_ROW] and rows[TWIN_GIVEN_ROW]["toy"] == own["toy"]
    assert 0 < summaries[TWIN_ROW]["extra_parameters"]
    always_first = lambda features: torch.tensor([[1.0, 0.0]]).expand(len(features), 2)  # noqa: E731
    given = {"toy": own["toy"], "toy2": {}}
    routed, picks = routed_scores(judge, model, [first, second], folded, always_first, shared_state, given)
    assert picks == {"toy": {"toy": 1.0}, "toy2": {"toy": 1.0}}
    model.load_state_dict(folded["toy"])  # toy2's questions answered by toy's model, counted question by question
    assert routed["toy2"] == asdict(evaluate(model, tok, second)) and routed["toy"] == own["toy"]
    features = prompt_features(judge.load(folder), tok, ["a", "a longer prompt"])
    torch.testing.assert_close(features.norm(dim=1), torch.ones(2))
    alone_scores, summary = emr_row(Judge(folder, [first]), [first], {"toy": states["toy"]})
    assert alone_scores == {"toy": own["toy"]} and summary["tensors"] > 0


def test_an_exclusive_part_is_the_truncated_svd_whether_its_difference_is_low_rank_or_not():
    """Twin-Merging's exclusive part on the LLM bench: a difference of rank 40 (six LoRA experts' sum) goes through
    the narrow randomized range, a full-rank one through the full SVD; both give the best rank-32 approximation."""
    from taskfuse.llm.task_models import exclusive_part
    torch.manual_seed(0)
    low = torch.randn(300, 40) @ torch.randn(40, 200) / 40
    full = torch.randn(300, 200)
    for difference in (low, full):
        u, s, vh = torch.linalg.svd(difference, full_matrices=False)
        best = (u[:, :32] * s[:32]) @ vh[:32]
        b, a = exclusive_part(difference, 32, torch.Generator().manual_seed(1))
        assert b.shape == (300, 32) and a.shape == (32, 200)
        torch.testing.assert_close(b @ a, best, rtol=0, atol=1e-4 * float(best.abs().max()))


def test_the_routed_rows_of_one_expert_are_that_expert(tiny, two_experts):
    """PHATGOOSE and MHR over a library of one adapter: top-2 of one expert gives it weight 1, every head's mixture of
    one skill is that skill, so each routed model is base + ΔW and scores as the merged expert does."""
    from taskfuse.llm.bench import Judge
    from taskfuse.llm.routed import mhr_row, phatgoose_row
    folder, _, _ = tiny
    first, _, experts, _ = two_experts
    judge = Judge(folder, [first])
    library = judge.library({"toy": experts["toy"]})
    own = judge.model_scores(judge.load_adapter(experts["toy"].adapter), "test")
    for row in (phatgoose_row, mhr_row):
        scores, summary = row(judge, [first], library, steps=3)
        assert scores == own, row.__name__
        assert len(summary["losses_per_task"]["toy"]) == 3 and summary["losses"] == summary["losses_per_task"]["toy"]


def test_the_routed_rows_learn_on_each_tasks_train_answers(tiny, two_experts):
    """Two toy experts: PHATGOOSE's gates lower the loss of each expert on its own train answers, MHR's routing the
    loss of each task; both score every task and MHR says how often a task's routing ranks its own expert first."""
    from taskfuse.llm.routed import mhr_row, phatgoose_row
    first, second, experts, judge = two_experts
    library = judge.library(experts)
    for row in (phatgoose_row, mhr_row):
        scores, summary = row(judge, [first, second], library, steps=12)
        assert set(scores) == {"toy", "toy2"} and all(0 <= s["exact_match"] <= 1 for s in scores.values())
        for losses in summary["losses_per_task"].values():
            assert sum(losses[-3:]) < sum(losses[:3]), row.__name__
    assert set(summary["own_expert_first"]) == {"toy", "toy2"}


def test_the_llm_zoo_trains_the_longest_prompts_first_and_then_loads_from_the_cache(tiny, tmp_path, monkeypatch):
    """Two workers finish together when the most expensive expert starts first: the task whose prompts are longer is
    trained first whatever the order asked; a second call trains nothing."""
    from taskfuse.llm.zoo import build_llm_zoo
    monkeypatch.setenv("TASKFUSE_CACHE", str(tmp_path / "cache"))
    short = toy_task()
    long = LLMTask("toy_long", ANSWERS, {k: tuple(Example(e.prompt + " and so on" * 20, e.answer) for e in v)
                                         for k, v in short.splits.items()}, "2" * 64)
    order = []
    recipe = Recipe(rank=2, steps=2, batch=2)
    experts = build_llm_zoo(tiny[0], [short, long], recipe, workers=2, progress=lambda d, t, n: order.append(n))
    assert order == ["toy_long", "toy"] and set(experts) == {"toy", "toy_long"}
    assert build_llm_zoo(tiny[0], [short, long], recipe, progress=lambda d, t, n: order.append(n)) == experts
    assert order == ["toy_long", "toy"]
