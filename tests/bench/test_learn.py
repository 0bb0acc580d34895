"""Learning coefficients on the tiny zoo's real experts: AdaMerging's entropy objective through a MergeView."""
import itertools

import torch

from taskfuse.eval.encoder import encode, load_encoder, load_tokenizer, sentence_embedding
from taskfuse.programs.learn import Recipe, TaskBatches
from taskfuse.programs.learning_loop import learn_coefficients
from taskfuse.programs.merge_view import MergeView, Parameterization
from taskfuse.zoo.build import build_zoo
from taskfuse.zoo.recipe import VARIANTS


def test_adamerging_lowers_the_entropy_of_every_task_and_keeps_coefficients_in_range(tiny_bench, monkeypatch):
    monkeypatch.setenv("TASKFUSE_CACHE", str(tiny_bench[3]))
    zoo = build_zoo(VARIANTS["tiny"])
    base = load_encoder(zoo.base_dir)
    theta0 = base.state_dict()
    vectors = [{n: p - theta0[n] for n, p in load_encoder(e.model_dir).state_dict().items()}
               for e in zoo.experts.values()]
    view = MergeView(base, vectors, Parameterization("layer"))
    tokenizer = load_tokenizer()

    def fixed_batch(task):  # one unlabeled validation batch per task, repeated: the loss must fall on it
        data = encode(tokenizer, zoo.tasks[task].splits["validation"].texts[:16], [0] * 16)
        _, ids, mask = next(data.batches(16))
        return lambda: itertools.repeat(({"ids": ids, "mask": mask}, None))

    tasks = {name: TaskBatches(expert.head(), fixed_batch(name), lambda v, x: sentence_embedding(v, x["ids"], x["mask"]))
             for name, expert in zoo.experts.items()}
    losses = learn_coefficients(view, tasks, Recipe(steps=6, lr=0.05))
    assert losses[-1] < losses[0]
    assert float(view.coefficients.min()) >= 0.0 and float(view.coefficients.max()) <= 1.0
    assert not torch.allclose(view.coefficients, torch.full_like(view.coefficients, 0.3))
