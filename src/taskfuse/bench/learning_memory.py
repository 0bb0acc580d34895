"""What learning merge coefficients holds in memory, against issue 12's bound: base + T task vectors + the
activations of one batch + 20 %.

bench-full's learned rows record how much the process's RSS grew while each row learned, but that process has
already run the grid and the rows before it, so the figure moves with what the allocator kept from them (the same
row grew 417 MiB in one run and 774 MiB in another). Here each row learns in an interpreter of its own, through
the same functions the benchmark's rows call, and the bound's one term no row records is measured: the bytes
autograd keeps for backward from one task's largest batch. Only one task's activations are alive at a time (the
loop runs forward and backward per task, programs/learning_loop.py), so the largest task's is the batch term.

The peak is also split in two: building the view (loading the experts, their task vectors, and a sparsifier's
pre-processing) and the learning loop itself, so a row over the bound says which of the two put it there. Beside
RSS, the loop's peak of what it holds is sampled: the bytes malloc has handed out and not had back (glibc's
mallinfo2) plus the resident pages of mapped files (the base's weights, which transformers maps from its
safetensors file and malloc never sees). RSS above that is memory freed but kept resident by the allocator, which
says whether a row is over the bound by what it holds or by how glibc reuses freed tensors (it serves mid-sized
ones from a heap it rarely gives back).
"""
from __future__ import annotations

import ctypes
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import psutil
import torch

from ..libc import c_function
from ..programs.learn import TaskBatches
from ..programs.learning_loop import DEFAULT_STEP
from ..programs.merge_view import BoundMerge, MergeView
from ..programs.objectives import cross_entropy, entropy
from ..zoo.build import Zoo
from .learned import LearnedMethod, learn_on_zoo, task_streams
from .learned_over_merge import learn_over_merge
from .memory import RssPeak

MIB = 1 << 20
HEADROOM = 1.2  # the "+ 20 %"


def saved_activation_bytes(view: MergeView, task: TaskBatches, batch: tuple[dict, torch.Tensor | None],
                           objective: str) -> int:
    """Bytes of the tensors autograd saves for backward in one forward of `batch` through θ(Λ), each storage
    counted once; the weights it saves (θ(Λ) itself, the task vectors, the base and the head) are not activations
    and are left out."""
    with torch.no_grad():
        merged = view.merged_parameters()
    leaves = {n: p.requires_grad_() for n, p in merged.items()}
    weights = {_storage(t) for t in [*leaves.values(), *view.base.parameters(), *view.buffers(),
                                     *task.head.parameters(), *task.head.buffers()]}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = _storage(tensor)
        if key not in weights:
            saved[key] = tensor.untyped_storage().nbytes()
        return tensor

    inputs, labels = batch
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        logits = task.head(task.features(BoundMerge(view.base, leaves), inputs))
        loss = entropy(logits) if objective == "entropy" else cross_entropy(logits, labels)
    del loss, logits
    return sum(saved.values())


def _storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def largest_batch(batches: Iterator[tuple[dict, torch.Tensor | None]], count: int) -> tuple[dict, torch.Tensor | None]:
    """Of the next `count` batches (one pass over a task's examples), the one with the most token positions."""
    return max((next(batches) for _ in range(count)), key=lambda b: b[0]["ids"].numel())


def batch_activations(view: MergeView, zoo: Zoo, method: LearnedMethod) -> dict[str, int]:
    """Per task, the saved-activation bytes of its largest batch in one pass over the examples the method sees."""
    streams = task_streams(zoo, method, zoo.variant.recipe.seed)
    examples = method.data_seen(zoo)["examples"]
    found = {}
    for name, task in streams.items():
        count = -(-examples[name] // method.batch_size)
        found[name] = saved_activation_bytes(view, task, largest_batch(task.batches(), count), method.recipe.objective)
    return found


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


class HeldPeak(RssPeak):
    """RssPeak's sampler over what the process holds instead of its RSS: malloc's bytes in use (heap chunks handed
    out plus chunks mmapped on their own) and the resident pages of mapped files; `available()` is False off
    glibc."""

    _read = c_function("mallinfo2", _MallInfo2)  # glibc 2.33 and later; None elsewhere

    @classmethod
    def available(cls) -> bool:
        return cls._read is not None

    def __init__(self, interval: float = 0.02):
        super().__init__(interval)
        self.resident, self.process = self.process, self  # RssPeak samples self.process.memory_info().rss

    def memory_info(self) -> SimpleNamespace:
        info = self._read()
        mapped_files = self.resident.memory_info().shared  # Linux: resident file-backed (and shared) pages
        return SimpleNamespace(rss=info.uordblks + info.hblkhd + mapped_files)


def import_model_code(base_dir: Path) -> None:
    """Build the base's architecture on the meta device (no weights): the modelling code transformers imports on a
    first load (about 150 MiB of RSS for BERT here) is the library's, not learning's, and bench-full's rows run in a
    process that has long loaded it."""
    from transformers import AutoConfig, AutoModel
    with torch.device("meta"):
        AutoModel.from_config(AutoConfig.from_pretrained(str(base_dir)))


def measure_row(zoo: Zoo, method: LearnedMethod, start: Path | None = None, step: str = DEFAULT_STEP) -> dict:
    """Learn `method` as the benchmark's row does (from the base, or from the merge written at `start`) with the
    gradient step `step` (programs/learning_loop.py STEPS), and return its memory against the bound, in MiB. Meant to run alone in a fresh
    process."""
    import_model_code(zoo.base_dir)
    process = psutil.Process()
    before = process.memory_info().rss
    loop = RssPeak()  # entered after the first step: the loop's peak from step 2 on, the view already built
    held = HeldPeak() if HeldPeak.available() else None  # the same stretch, what the process holds
    held_before = held.memory_info().rss if held else 0

    def progress(done: int, total: int, loss: float) -> None:
        if done == 1:
            loop.__enter__()
            if held:
                held.__enter__()

    started = time.perf_counter()
    result = (learn_on_zoo(zoo, method, progress, step) if start is None
              else learn_over_merge(zoo, method, start, progress, step))
    seconds = time.perf_counter() - started
    loop.__exit__(None, None, None)
    if held:
        held.__exit__(None, None, None)
    activations = batch_activations(result.view, zoo, method)
    largest = max(activations, key=activations.get)
    memory = result.memory
    bound = HEADROOM * (memory["base_mib"] + memory["task_vectors_mib"] + activations[largest] / MIB)
    weights_mib = sum(p.numel() * p.element_size() for p in result.view.merged_parameters().values()) / MIB
    return {"method": method.name, "step": step, "steps": len(result.losses), "seconds": round(seconds, 1),
            # the two steps' gradients differ only in summation order: their losses should follow each other
            "loss_last_10_mean": round(sum(result.losses[-10:]) / len(result.losses[-10:]), 4),
            "base_mib": memory["base_mib"], "task_vectors_mib": memory["task_vectors_mib"],
            "activations_mib": round(activations[largest] / MIB, 1), "activations_task": largest,
            "activations_mib_per_task": {t: round(b / MIB, 1) for t, b in activations.items()},
            "merged_weights_mib": round(weights_mib, 1),
            "bound_mib": round(bound, 1), "rss_added_mib": memory["rss_added_mib"],
            "loop_rss_added_mib": round((loop.peak - before) / MIB),
            # what the loop holds at its peak (malloc's bytes in use + mapped files' resident pages), above the
            # same count before the learning (None off glibc)
            "loop_held_added_mib": round((held.peak - held_before) / MIB) if held else None,
            "rss_before_mib": round(before / MIB), "process_peak_rss_mib": memory["process_peak_rss_mib"],
            "within": memory["rss_added_mib"] <= bound}
