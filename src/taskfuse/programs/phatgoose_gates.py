"""PHATGOOSE over a user's library of causal-LM LoRA adapters (`taskfuse route phatgoose`): each adapter's gates
(one vector per adapted module, routing/phatgoose.py) learn on that adapter's own text with everything else frozen,
then every token goes to the top-k adapters whose normalised gates it aligns with.

Each adapter's data is a JSONL file in the format `taskfuse learn --spec` reads (programs/text_data.py): {"text"},
or {"prompt", "completion"} with the loss on the completion only. Decided here: the paper's 100 steps and learning
rate 1e-3 as defaults, batches of 8 (the LLM benchmark's routers), the same seeded draw for every adapter."""
from __future__ import annotations

import time
from collections.abc import Callable

from torch import nn

from ..errors import UsageError
from ..routing.library import LoraLibrary
from .library_text import endless_batches, watched_loss
from .text_data import TextExamples, read_examples

GATE_STEPS, GATE_BATCH, GATE_LR = 100, 8, 1e-3
Progress = Callable[[str, int, float], None]  # adapter, steps done, loss


def read_library_data(library: LoraLibrary, data: dict[str, str], tok) -> dict[str, TextExamples]:
    """Each adapter's tokenised examples; a typed error for an adapter without data or data without an adapter."""
    unknown = sorted(set(data) - set(library.experts))
    if unknown:
        raise UsageError(f"--data for {', '.join(unknown)}, which no --adapter names (adapters: "
                         f"{', '.join(library.experts)}). Fix: write --data NAME=FILE with an adapter's NAME.")
    missing = [e for e in library.experts if e not in data]
    if missing:
        raise UsageError(f"adapter(s) {', '.join(missing)} have no --data: PHATGOOSE trains each adapter's gates on "
                         "that adapter's own text. Fix: add --data NAME=FILE.jsonl for each.")
    return {e: read_examples(data[e], tok, labelled=True) for e in library.experts}


def train_library_gates(load_base: Callable[[], nn.Module], library: LoraLibrary, data: dict[str, TextExamples],
                        pad_id: int, steps: int = GATE_STEPS, batch: int = GATE_BATCH, lr: float = GATE_LR,
                        seed: int = 0, progress: Progress | None = None) -> tuple[dict, dict]:
    """Gates per adapter and module, and how each adapter's gates learnt (loss per step, seconds)."""
    from ..routing.phatgoose import train_gates

    gates, record = {}, {}
    for expert in library.experts:
        losses, begun = [], time.perf_counter()
        loss = watched_loss(losses, progress and (lambda step, value, expert=expert: progress(expert, step, value)),
                            lambda value, step, expert=expert: f"adapter {expert!r}: the gate loss became {value} at "
                                                               f"step {step}. Fix: lower --lr (now {lr}).")
        gates[expert] = train_gates(load_base, library, expert, endless_batches(data[expert], batch, seed, pad_id),
                                    loss, steps, lr, seed)
        record[expert] = {"losses": losses, "seconds": round(time.perf_counter() - begun, 1)}
    return gates, record


def phatgoose_model(load_base: Callable[[], nn.Module], library: LoraLibrary, gates: dict, top_k: int) -> nn.Module:
    """The base with every adapted module routed per token over the adapters' normalised gates."""
    from ..routing.modules import route
    from ..routing.phatgoose import PhatgooseRouter, gate_matrix
    return route(load_base(), library, lambda name, updates, module: PhatgooseRouter(
        gate_matrix(library, gates, name, module.in_features), top_k)).eval()


def data_seen(data: dict[str, TextExamples], steps: int, batch: int) -> dict:
    return {expert: {**examples.describe(labels=True), "steps": steps, "batch": batch}
            for expert, examples in data.items()}
