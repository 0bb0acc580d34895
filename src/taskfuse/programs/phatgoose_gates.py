"""PHATGOOSE over a user's library of causal-LM LoRA adapters (`taskfuse route phatgoose`): each adapter's gates
(one vector per adapted module, routing/phatgoose.py) learn on that adapter's own text with everything else frozen,
then every token goes to the top-k adapters whose normalised gates it aligns with.

Each adapter's data is a JSONL file in the format `taskfuse learn --spec` reads (programs/text_data.py): {"text"},
or {"prompt", "completion"} with the loss on the completion only. Decided here: the paper's 100 steps and learning
rate 1e-3 as defaults, batches of 8 (the LLM benchmark's routers), the same seeded draw for every adapter."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from ..errors import UsageError
from ..routing.library import LoraLibrary
from .text_data import TextExamples, language_model_batches, read_examples

GATE_STEPS, GATE_BATCH, GATE_LR = 100, 8, 1e-3
Progress = Callable[[str, int, float], None]  # adapter, steps done, loss


def causal_lm_loader(base: str) -> Callable[[], nn.Module]:
    """A loader of `base` as its causal-LM class, after checking it is one: gates learn from next-token loss."""
    import transformers
    config = transformers.AutoConfig.from_pretrained(base)
    classes = [getattr(transformers, a, None) for a in (config.architectures or []) if a.endswith("ForCausalLM")]
    if not any(classes):
        raise UsageError(f"base {base} is a {', '.join(config.architectures or ['model without architectures'])}, "
                         "not a causal LM: PHATGOOSE gates learn here from next-token loss on each adapter's text. "
                         "Fix: give a causal LM's base; encoder libraries are routed in `taskfuse bench --routing`.")
    cls = next(c for c in classes if c is not None)
    return lambda: cls.from_pretrained(base).float()


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


def answer_batches(examples: TextExamples, batch: int, seed: int, pad_id: int) -> Iterator:
    """Endless (ids, mask, labels) batches: labels are the next tokens the loss scores, −100 elsewhere."""
    for inputs, targets in language_model_batches(examples, batch, seed, pad_id).batches():
        labels = torch.full_like(inputs["ids"], -100)
        labels[:, 1:][inputs["scored"]] = targets
        yield inputs["ids"], inputs["mask"], labels


def train_library_gates(load_base: Callable[[], nn.Module], library: LoraLibrary, data: dict[str, TextExamples],
                        pad_id: int, steps: int = GATE_STEPS, batch: int = GATE_BATCH, lr: float = GATE_LR,
                        seed: int = 0, progress: Progress | None = None) -> tuple[dict, dict]:
    """Gates per adapter and module, and how each adapter's gates learnt (loss per step, seconds)."""
    from ..llm.zoo import prompt_opening, reply_loss
    from ..routing.phatgoose import train_gates

    gates, record = {}, {}
    for expert in library.experts:
        losses, begun = [], time.perf_counter()

        def loss(model, ids, mask, labels, expert=expert, losses=losses):
            value = reply_loss(model, ids, mask, labels, prompt_opening(ids, labels))
            losses.append(round(value.item(), 4))
            if not torch.isfinite(value):
                raise UsageError(f"adapter {expert!r}: the gate loss became {value.item()} at step {len(losses)}. "
                                 f"Fix: lower --lr (now {lr}).")
            if progress:
                progress(expert, len(losses), losses[-1])
            return value

        gates[expert] = train_gates(load_base, library, expert, answer_batches(data[expert], batch, seed, pad_id),
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


def tokenizer_of(base: str | Path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(base))
