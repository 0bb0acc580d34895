"""MHR / Poly for a new task on a user's causal-LM LoRA library (`taskfuse route mhr`): every adapted module mixes
the adapters' factors per head block (routing/mhr.py), and the mixing logits of one new task learn from a few of
its examples, with everything else frozen (MHR-z); with `skills`, the adapters' factors learn too (Poly's and MHR's
full few-shot fine-tuning: the routing study's best row for a new task, docs/adapters.md).

The examples are a JSONL file in the format `taskfuse learn --spec` reads. Decided here: the routing study's 8 head
blocks and routing learning rate 0.1 (bench/routing_rows.py), the factors' rate 10⁻³ (the LLM zoo's LoRA rate),
40 steps of 8 examples (the study's few-shot budget). `seed` orders the batches and draws the routing's relaxed
Bernoulli samples: the only randomness (the routing starts uniform, the factors from the library)."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from torch import nn

from ..bench.routing_rows import MHR_HEADS, MHR_ROUTING_LR
from ..routing.library import LoraLibrary
from ..routing.mhr import adapt, route_mhr, use_task
from .library_text import endless_batches, pad_id, watched_loss
from .text_data import read_examples

MHR_STEPS, MHR_BATCH, SKILLS_LR = 40, 8, 1e-3


def adapted_mhr(load_base: Callable[[], nn.Module], library: LoraLibrary, tok, data: str | Path,
                steps: int = MHR_STEPS, heads: int = MHR_HEADS, skills: bool = False,
                progress: Callable[[int, float], None] | None = None, seed: int = 0) -> tuple[nn.Module, dict]:
    """The base with MHR over `library`, its one task's routing (and with `skills` the factors) adapted to `data`;
    and what it saw and how it learnt."""
    examples = read_examples(data, tok, labelled=True)
    model = route_mhr(load_base(), library, heads, tasks=1)
    use_task(model, 0)
    losses: list[float] = []

    loss = watched_loss(losses, progress, lambda value, step: f"MHR adaptation on {data}: the loss became {value} "
                        f"at step {step}. Fix: check the examples, or adapt the routing only (no --skills).")

    begun = time.perf_counter()
    adapt(model, endless_batches(examples, MHR_BATCH, seed, pad_id(tok)), loss, steps, MHR_ROUTING_LR,
          SKILLS_LR if skills else None, seed=seed)
    record = {"data_seen": {**examples.describe(labels=True), "steps": steps, "batch": MHR_BATCH, "seed": seed},
              "adaptation": {"learnt": "routing and skills" if skills else "routing", "routing_lr": MHR_ROUTING_LR,
                             **({"skills_lr": SKILLS_LR} if skills else {}), "losses": losses,
                             "seconds": round(time.perf_counter() - begun, 1)}}
    return model.eval(), record
