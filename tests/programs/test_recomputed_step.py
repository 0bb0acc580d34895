"""The memory-lean learning step: the same Λ gradient as programs/learn.py's step, with blocks recomputed."""
import itertools

import pytest
import torch
from torch import nn

from taskfuse.programs.learn import TaskBatches, _accumulate_gradients
from taskfuse.programs.merge_view import BoundMerge, MergeView, Parameterization
from taskfuse.programs.recomputed_step import (StepMerge, accumulate_gradients_recomputed, recomputed_blocks,
                                               repeated_blocks)
from taskfuse.programs.slerp_view import SlerpView
from taskfuse.testing.checkpoints import build_model, perturb


def family(arch: str, tie: bool = False, tasks: int = 3):
    base = build_model(arch, 0, tie=tie).double()
    theta0 = base.state_dict()
    vectors = []
    for t in range(tasks):
        tune = perturb(build_model(arch, 0, tie=tie), seed=100 + t, scale=0.05).double().state_dict()
        vectors.append({n: tune[n] - theta0[n] for n in theta0})
    return base, vectors


def hidden(model, inputs: dict, use_cache: bool = False) -> torch.Tensor:
    out = model(input_ids=inputs["ids"], attention_mask=inputs["mask"], output_hidden_states=True,
                use_cache=use_cache)
    return out.hidden_states[-1].mean(1)  # a causal LM's last hidden state, a BERT's, pooled


def hidden_cached(model, inputs: dict) -> torch.Tensor:
    """As the LLM objectives run a batch: the rows' shared opening once, its cache extended by the rest."""
    ids = inputs["ids"]
    past = model(input_ids=ids[:1, :3], use_cache=True).past_key_values
    past.batch_repeat_interleave(ids.shape[0])
    out = model(input_ids=ids[:, 3:], attention_mask=inputs["mask"], past_key_values=past, use_cache=True,
                output_hidden_states=True)
    return out.hidden_states[-1].mean(1)


def tasks_for(width: int, tasks: int, labelled: bool, features=hidden) -> dict[str, TaskBatches]:
    made = {}
    for t in range(tasks):
        g = torch.Generator().manual_seed(t)
        head = nn.Linear(width, 4).double().requires_grad_(False)
        nn.init.normal_(head.weight, generator=g)
        ids = torch.randint(5, 120, (3, 4, 9), generator=g)  # three batches of 4, 9 tokens
        mask = torch.ones_like(ids)
        mask[:, 0, 6:] = 0  # a padded row
        labels = torch.randint(0, 4, (3, 4), generator=g)

        def batches(ids=ids, mask=mask, labels=labels):
            for i in itertools.cycle(range(3)):
                yield {"ids": ids[i], "mask": mask[i]}, (labels[i] if labelled else None)
        made[f"task{t}"] = TaskBatches(head, batches, features)
    return made


def both_gradients(view: MergeView, objective: str, steps: int = 2, features=hidden) -> tuple[list, list]:
    """Λ's (and a SlerpView's λ's) gradient of each step, from each of the two steps on the same batches."""
    tasks = tasks_for(view.base.config.hidden_size, view.tasks, objective != "entropy", features)
    grads = []
    for step in (_accumulate_gradients, accumulate_gradients_recomputed):
        streams = {name: t.batches() for name, t in tasks.items()}
        found = []
        for _ in range(steps):
            for p in view.parameters():
                p.grad = None
            loss = step(view, tasks, streams, objective)
            found.append((loss, [p.grad.clone() for p in view.parameters() if p.requires_grad]))
        grads.append(found)
    return grads[0], grads[1]


@pytest.mark.parametrize("arch, kind, objective, tie, features", [
    ("bert", "layer", "entropy", False, hidden), ("bert", "task", "cross_entropy", False, hidden),
    ("llama", "layer", "cross_entropy", False, hidden), ("llama", "partition", "entropy", True, hidden),
    ("llama", "layer", "cross_entropy", True, hidden_cached)])
def test_the_gradient_is_the_merged_once_steps(arch, kind, objective, tie, features):
    base, vectors = family(arch, tie)
    view = MergeView(base, vectors, Parameterization(kind, 3 if kind == "partition" else 1)).double()
    with torch.no_grad():  # coefficients apart from each other, so a mixed-up tensor or task would show
        view.coefficients.copy_(torch.rand(view.coefficients.shape, generator=torch.Generator().manual_seed(1)))
    expected, found = both_gradients(view, objective, features=features)
    for (loss, grads), (loss_r, grads_r) in zip(expected, found):
        assert loss_r == pytest.approx(loss, rel=1e-12)
        for g, g_r in zip(grads, grads_r):
            assert g.abs().sum() > 0
            torch.testing.assert_close(g_r, g, rtol=1e-9, atol=1e-12)


def test_self_positionings_weights_and_scale_get_the_same_gradient():
    base, vectors = family("bert")
    view = SlerpView(base, vectors, scale=1.3).double()
    expected, found = both_gradients(view, "contrastive", steps=1)
    assert len(found[0][1]) == 2  # the weights' logits and log λ
    for g, g_r in zip(expected[0][1], found[0][1]):
        torch.testing.assert_close(g_r, g, rtol=1e-9, atol=1e-12)


def test_blocks_are_the_layers_and_come_back_unpatched_even_after_an_error():
    bert, _ = family("bert", tasks=1)
    llama, vectors = family("llama", tasks=2)
    assert [n for n, _ in repeated_blocks(bert)] == ["encoder.layer.0", "encoder.layer.1"]
    assert [n for n, _ in repeated_blocks(llama)] == ["model.layers.0", "model.layers.1", "model.layers.2"]
    view = MergeView(llama, vectors).double()
    with pytest.raises(RuntimeError, match="boom"):
        with recomputed_blocks(view, StepMerge(view)) as outside:
            assert all("forward" in block.__dict__ for _, block in repeated_blocks(llama))
            assert set(outside) == {n for n in view.names if not n.startswith("model.layers.")}
            assert "model.norm.weight" in outside
            raise RuntimeError("boom")
    assert not any("forward" in block.__dict__ for _, block in repeated_blocks(llama))


def test_a_forward_keeps_only_the_blocks_inputs_for_backward():
    """The tensors autograd saves outside the recomputed blocks in one forward (inside, the checkpoint keeps
    nothing until backward): less than half of what the merged-once forward saves."""
    base, vectors = family("llama", tasks=2)
    view = MergeView(base, vectors).double()
    inputs = {"ids": torch.randint(5, 120, (4, 9)), "mask": torch.ones(4, 9, dtype=torch.long)}

    def saved_bytes(run) -> int:
        seen = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = run()
        del out
        return sum(seen.values())

    merged_once = saved_bytes(lambda: hidden(view, inputs).sum())
    merge = StepMerge(view)
    with recomputed_blocks(view, merge) as outside:
        merged = {n: merge.connected(n) for n in outside}
        recomputed = saved_bytes(lambda: hidden(BoundMerge(base, merged), inputs).sum())
    assert recomputed < 0.5 * merged_once


def test_freed_memory_is_handed_back_after_each_blocks_backward_and_each_task(monkeypatch):
    from taskfuse.programs import recomputed_step
    calls = []
    real = recomputed_step._TRIM
    monkeypatch.setattr(recomputed_step, "_TRIM", lambda pad: calls.append(pad) or (real(pad) if real else 0))
    base, vectors = family("bert", tasks=2)
    view = MergeView(base, vectors).double()
    tasks = tasks_for(base.config.hidden_size, 2, labelled=False)
    accumulate_gradients_recomputed(view, tasks, {n: t.batches() for n, t in tasks.items()}, "entropy")
    assert len(calls) == 2 * (len(repeated_blocks(base)) + 1)
