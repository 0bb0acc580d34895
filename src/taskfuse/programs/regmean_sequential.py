"""RegMean++ (Nguyen et al. 2025, arXiv:2508.03121): RegMean with each layer's Gram matrices taken where the merged
model will use that layer.

RegMean reads every model's layer inputs from that model alone. RegMean++ merges depth by depth: the Grams of layer
l's linear maps come from running each model's own layer l on the representations the *already merged* layers
0..l-1 give its task's data, so later layers are fitted to the inputs the merged model really produces. The
merge itself is unchanged, so the result is written as ordinary per-model Gram statistics that `regmean` in the
streaming engine turns into exactly this model (the in-memory merge here only produces those inputs).

What we decided where the paper leaves it open (it describes ViT and transformer blocks): the order of "layers" is
the order the model calls its linear maps on a batch, grouped by the layer index in their names (`layers.3.`,
`layer.3.`, `h.3.`); linear maps outside the numbered layers form a group of their own before or after them, and
there only the linear maps (with their biases) come from the model whose Grams are taken. Embeddings and norms
outside the layers are the weighted average throughout, as RegMean merges them. A group's forward pass stops
after its last linear map: nothing later can change its inputs.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..methods.inputs import Inputs
from ..methods.regmean import Regmean, regmean
from ..plan.schedule import layer_index
from .statistics import Forward, GramAccumulator, linear_weights


class _GroupDone(Exception):
    """Raised by a hook once a group's last linear map has run, to skip the rest of the forward pass."""


@contextmanager
def _stop_after(module: nn.Module):
    def stop(*_):
        raise _GroupDone

    handle = module.register_forward_hook(stop)
    try:
        yield
    finally:
        handle.remove()


def call_order(model: nn.Module, forward: Forward, inputs: dict) -> list[str]:
    """Weight names of the model's linear maps in the order one forward pass first calls them."""
    layers = linear_weights(model)
    order: list[str] = []
    handles = [m.register_forward_hook(lambda *_, name=name: order.append(name) if name not in order else None)
               for name, m in layers.items()]
    try:
        with torch.no_grad():
            forward(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return order


def depth_groups(order: list[str]) -> list[list[str]]:
    """Consecutive linear weights with the same layer index (or none) form one group, in call order."""
    groups: list[list[str]] = []
    for name in order:
        if groups and layer_index(groups[-1][0]) == layer_index(name):
            groups[-1].append(name)
        else:
            groups.append([name])
    return groups


def group_members(group: list[str], names: list[str]) -> list[str]:
    """The parameters a group replaces and merges: a numbered layer's every parameter; outside the layers, its
    linear maps' weights and biases."""
    index = layer_index(group[0])
    if index is not None:
        return [n for n in names if layer_index(n) == index]
    modules = {g[: -len(".weight")] for g in group}
    return [n for n in names if n.rsplit(".", 1)[0] in modules]


def sequential_grams(models: list[nn.Module], task_inputs: list[list[dict]], forward: Forward,
                     weights: list[float], off_diagonal_scale: float,
                     progress: Callable[[int, int], None] | None = None) -> tuple[list[dict[str, Tensor]], nn.Module]:
    """Per model, its Gram statistics under RegMean++, and the merged model they give (for checking).

    models: the fine-tuned models (same architecture), task_inputs[t]: batches of model t's task data.
    """
    merged_model = copy.deepcopy(models[0]).eval()
    merged = dict(merged_model.named_parameters())
    names = list(merged)
    own = [dict(m.named_parameters()) for m in models]
    w = torch.tensor(weights, dtype=torch.float32)
    params = Regmean(off_diagonal_scale=off_diagonal_scale)

    def merge(name: str, grams: list[Tensor] | None) -> None:
        stack = torch.stack([p[name].detach().float() for p in own])
        statistics = torch.stack(grams) if grams else None
        merged[name].data.copy_(regmean(Inputs(stack, w, key=name, statistics=statistics), params))

    for name in names:  # the starting point: RegMean's average everywhere
        merge(name, None)
    groups = depth_groups(call_order(merged_model, forward, task_inputs[0][0]))
    layers = linear_weights(merged_model)
    grams: list[dict[str, Tensor]] = [{} for _ in models]
    for done, group in enumerate(groups):
        members = group_members(group, names)
        for t in range(len(models)):
            with torch.no_grad():
                for name in members:
                    merged[name].copy_(own[t][name])
            accumulator = GramAccumulator({n: layers[n] for n in group})
            with accumulator.hooked(), _stop_after(layers[group[-1]]):
                for inputs in task_inputs[t]:
                    try:
                        accumulator.run(merged_model, forward, inputs)
                    except _GroupDone:
                        pass
            grams[t].update(accumulator.grams())
        for name in members:
            merge(name, [g[name] for g in grams] if name in group else None)
        if progress:
            progress(done + 1, len(groups))
    return grams, merged_model
