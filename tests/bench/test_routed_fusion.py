"""Routed decode-time fusion on tiny real Llamas and two real tasks: the router tells the tasks apart from the small
model's reading of their prompts, and with the large model the small one each task's questions are answered
exactly as its own expert answers them; a router that sends a task elsewhere changes its score."""
import torch
from torch import nn

from taskfuse.bench.routed_fusion import prompt_router, routed_fusion_scores
from taskfuse.llm.bench import Judge
from taskfuse.llm.evaluate import evaluate
from taskfuse.llm.tasks import load_llm_task
from taskfuse.llm.zoo import Recipe, build_llm_zoo
from taskfuse.testing.tiny_llm import save_tiny_causal_lm


class Always(nn.Module):
    """A router that sends every question to expert `index`."""

    def __init__(self, index: int, experts: int):
        super().__init__()
        self.index, self.experts = index, experts

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(torch.full((len(features),), self.index), self.experts).float()


def test_the_router_picks_each_task_and_fusion_with_the_small_model_is_its_expert(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKFUSE_CACHE", str(tmp_path / "cache"))
    tiny = save_tiny_causal_lm(tmp_path / "tiny", "llama", seed=3)
    tasks = [load_llm_task(name, limits={"test": 6}) for name in ("wordnet_pos", "fortune_language")]
    judge = Judge(tiny, tasks)
    experts = build_llm_zoo(tiny, tasks, Recipe(rank=2, steps=3, batch=2, lr=1e-2), workers=1)
    models = {t.name: judge.load_adapter(experts[t.name].adapter) for t in tasks}
    small = judge.load(tiny)
    router = prompt_router(small, judge.tok, tasks)
    scores, picks = routed_fusion_scores(small, small, models.__getitem__, router, judge.tok, tasks)
    assert picks == {"wordnet_pos": {"wordnet_pos": 1.0}, "fortune_language": {"fortune_language": 1.0}}
    own = {t.name: evaluate(models[t.name], judge.tok, t, "test") for t in tasks}
    for task in tasks:
        assert scores[task.name]["exact_match"] == own[task.name].exact_match
        assert scores[task.name]["likelihood_accuracy"] == own[task.name].likelihood_accuracy
        assert scores[task.name]["n"] == 6
    # every question sent to the wordnet_pos expert: fortune_language is now answered by it
    loaded = []
    wrong, picks = routed_fusion_scores(small, small, lambda name: loaded.append(name) or models[name], Always(0, 2),
                                        judge.tok, tasks)
    assert loaded == ["wordnet_pos"]  # an expert no question goes to is never loaded, a picked one once
    assert picks["fortune_language"] == {"wordnet_pos": 1.0}
    crossed = evaluate(models["wordnet_pos"], judge.tok, tasks[1], "test")
    assert wrong["fortune_language"]["likelihood_accuracy"] == crossed.likelihood_accuracy
