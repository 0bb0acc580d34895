"""Λ's gradient for one learning step with each repeated block recomputed in backward: the memory-lean step.

The step in programs/learn.py computes θ(Λ) once per step, keeps it and its gradient (2 × |θ| bytes) for the whole
step, and holds every layer's activations of one task's batch between that task's forward and backward. This one
keeps θ(Λ) (computed once per step, without a graph) but never its gradient, and the activations of one block at a
time: each repeated block of the model (a transformer layer: the children of its ModuleList) runs in a checkpointed
region (torch.utils.checkpoint, non-reentrant), so a forward keeps only the blocks' inputs, and backward recomputes
one block at a time and sends its gradient to the (T,) weights of each tensor's task vectors (through _KnownMerge:
the block's weights are known, their backward is the task vectors' dot products with the weights' gradient), so no
θ-sized gradient is accumulated; those weights' gradients go back through Λ's graph once per step.
The parameters outside the blocks (embeddings, final norms, a pooler) reach Λ the same way, without a checkpoint.
A block call that reads or fills a key/value cache (the LLM objectives run a batch's shared prompt opening once
and extend its cache) is not recomputed: it would write the cache twice; it runs once and keeps its activations.
After each block's backward, and each task's, the freed heap pages are handed back (glibc's malloc_trim), or
the process keeps them resident.

What it costs: one more forward of every block per task, and one pass over the task vectors per task in backward
(the other step: one per step). benchmarks/learning_memory.py measures both steps' time and peak memory on the
benchmark's learned rows. The gradient is the same up to floating-point summation order
(tests/programs/test_recomputed_step.py).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint
from transformers.cache_utils import Cache

from ..libc import c_function
from ..ops.spherical import iterative_slerp_coefficients
from .learn import TaskBatches, _task_loss
from .merge_view import BoundMerge, MergeView
from .slerp_view import SlerpView


def repeated_blocks(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every child of the outermost ModuleLists that hold parameters: BERT's
    `encoder.layer.<i>`, Llama's `model.layers.<i>`. A ModuleList inside a block is the block's business."""
    blocks: list[tuple[str, nn.Module]] = []
    for name, child in module.named_modules():
        if isinstance(child, nn.ModuleList) and not any(name.startswith(f"{b}.") for b, _ in blocks):
            blocks += [(f"{name}.{i}" if name else str(i), block) for i, block in enumerate(child)
                       if any(True for _ in block.parameters())]
    return blocks


def coefficient_vector(view: MergeView, index: int) -> Tensor | None:
    """The (T,) weights of parameter `index`'s task vectors in θ(Λ) = θ₀ + Σ_t c_t τ_t, on the coefficients' graph;
    None where they vary inside the tensor (aTLAS×K partitions)."""
    if isinstance(view, SlerpView):
        deltas = getattr(view, f"delta_{index}")
        return view.scale * iterative_slerp_coefficients(getattr(view, f"gram_{index}"),
                                                         view.weights.double()).to(deltas.dtype)
    lam = view.coefficient_of(index)
    return lam if lam.dim() == 1 else None


class _KnownMerge(torch.autograd.Function):
    """θ₀ + Σ_t c_t τ_t whose value is already known: forward returns it, backward gives c its gradient (the task
    vectors' dot products with θ's), so a block recomputed in backward reads its task vectors once, not twice."""

    @staticmethod
    def forward(ctx, c: Tensor, deltas: Tensor, value: Tensor) -> Tensor:
        ctx.save_for_backward(deltas)
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (deltas,) = ctx.saved_tensors
        return deltas.reshape(deltas.shape[0], -1) @ grad.reshape(-1), None, None


class StepMerge:
    """θ(Λ) of every merged parameter, computed once per step without a graph (|θ| bytes held for the step);
    `connected(name)` joins a parameter's value to its coefficients' graph without merging it again.

    Each tensor's (T,) weights are also computed once per step, on the coefficients' graph, and the blocks read
    detached copies of them: the tasks' gradients add up in those copies, and `finish()` sends them back through
    the real graph once. Self Positioning's weights come out of an iterative SLERP in float64 whose graph would
    otherwise be rebuilt, and walked back, at every block call of every task (4x the step's time)."""

    def __init__(self, view: MergeView):
        self.view = view
        self.index = {name: i for i, name in enumerate(view.names)}
        with torch.no_grad():
            self.values = view.merged_parameters()
        self.weights = {i: w for i in range(len(view.names)) if (w := coefficient_vector(view, i)) is not None}
        self.read = {i: w.detach().requires_grad_() for i, w in self.weights.items()}

    def connected(self, name: str) -> Tensor:
        i = self.index[name]
        deltas = getattr(self.view, f"delta_{i}")
        if i not in self.read:  # partitions: the whole formula, on the graph
            theta0 = self.view.base.get_parameter(name).detach()
            return theta0 + (self.view.coefficient_of(i) * deltas).sum(0)
        return _KnownMerge.apply(self.read[i], deltas, self.values[name])

    def finish(self) -> None:
        """Add the gradients gathered in the read copies to the coefficients' (once per step, after every task)."""
        used = [i for i, w in self.read.items() if w.grad is not None]  # e.g. BERT's pooler feeds no embedding
        if used:
            torch.autograd.backward([self.weights[i] for i in used], [self.read[i].grad for i in used])


class _Inside(threading.local):
    block: nn.Module | None = None


@contextmanager
def recomputed_blocks(view: MergeView, merge: StepMerge) -> Iterator[list[str]]:
    """Within, every repeated block of the view's base that holds merged parameters runs in a checkpointed region
    with its parameters from `merge`; yields the names of the merged parameters outside every block (the caller
    passes them to the base)."""
    inside = _Inside()
    patched = []
    covered: set[str] = set()
    for prefix, block in repeated_blocks(view.base):
        names = [n for n in view.names if n.startswith(f"{prefix}.")]
        if not names:
            continue
        covered.update(names)
        local = [(n[len(prefix) + 1:], n) for n in names]
        patched.append((block, block.__dict__.get("forward")))  # an instance's own forward (a hook's), if any
        block.forward = _checkpointed_forward(merge, block, block.forward, local, inside)
    try:
        yield [n for n in view.names if n not in covered]
    finally:
        for block, own in patched:
            if own is None:
                del block.forward  # the class's forward again
            else:
                block.forward = own


def _checkpointed_forward(merge: StepMerge, block: nn.Module, own_forward, local: list, inside: _Inside):
    def merged_run(*args, **kwargs):
        merged = {name: merge.connected(full) for name, full in local}
        inside.block = block
        try:  # functional_call calls the block, whose forward is this patch: `inside` sends it to its own
            return functional_call(block, merged, args, kwargs, strict=False)
        finally:
            inside.block = None

    def forward(*args, **kwargs):
        if inside.block is block:
            return own_forward(*args, **kwargs)
        if _writes_a_cache(args, kwargs):  # a recompute would append its keys and values to the cache again
            return merged_run(*args, **kwargs)
        out = checkpoint(merged_run, *args, use_reentrant=False, **kwargs)
        entering = next((a for a in (*args, *kwargs.values()) if isinstance(a, Tensor) and a.requires_grad), None)
        if entering is not None:  # its gradient comes when this block's backward is done
            entering.register_hook(_trim_after_backward)
        return out

    return forward


def _trim_after_backward(grad: Tensor) -> None:
    release_freed_memory()


def _writes_a_cache(args: tuple, kwargs: dict) -> bool:
    """Whether a block call reads or fills a key/value cache (transformers' Cache objects, or use_cache=True):
    such a call runs once and keeps its activations for backward, as in the other step."""
    return bool(kwargs.get("use_cache")) or any(isinstance(v, Cache) for v in (*args, *kwargs.values()))


def accumulate_gradients_recomputed(view: MergeView, tasks: dict[str, TaskBatches], streams: dict,
                                    objective: str) -> float:
    """Λ.grad (added to what is there) of the summed task losses, each task's forward and backward in turn with the
    blocks recomputed; returns the sum. The same contract as programs/learn.py's step."""
    merge = StepMerge(view)
    total = 0.0
    with recomputed_blocks(view, merge) as outside:
        for name, task in tasks.items():
            merged = {n: merge.connected(n) for n in outside}
            loss = _task_loss(BoundMerge(view.base, merged), task, next(streams[name]), objective)
            loss.backward()
            total += float(loss.detach())
            del merged, loss
            release_freed_memory()
    merge.finish()
    return total


_TRIM = c_function("malloc_trim")  # None off glibc (macOS, musl): nothing to call


def release_freed_memory() -> None:
    """Hand the pages of freed heap memory back to the system (glibc's malloc_trim; nothing elsewhere).

    glibc serves mid-sized tensors (a layer's activations, a weight's gradient: 1 to 4 MiB here) from its heap once
    a large free has raised its mmap threshold, and keeps the freed pages resident. On the full benchmark's aTLAS
    row (benchmarks/learning_memory.py, one run each) the loop's RSS peaked 96 MiB above what it held with a trim
    after each task (654 MiB, 187 s of learning), 37 MiB above with a trim after each block's backward as well
    (595 MiB, 232 s), 21 MiB with glibc's mmap threshold fixed at 1 MiB instead (579 MiB, 221 s; 4 MiB: 653 MiB,
    198 s). A fixed threshold is a setting of the whole process, which the merge engine sets otherwise
    (execute/allocator.py), so the step trims.
    """
    if _TRIM is not None:
        _TRIM(0)
