"""A LoRA adapter fine-tuned on a new task's examples from its own factors (`taskfuse route lorahub --finetune-steps
N`): LoraHub's weighted adapter as the start of the k-shot training a LoRA from scratch would do.

Why: LoraHub only weighs what the library already knows, so a new task whose answers no adapter has seen stays
out of its reach (the LLM new-task study: manual section, text genre), while a LoRA from scratch forgets what the
library knew. Fine-tuning the composed adapter keeps both; its factors (rank = the sum of the kept adapters'
ranks, each keeping its own scaling) all learn. Decided here: the LLM zoo's LoRA recipe (AdamW, rate 10⁻³, batches
of 8, float32) and its reply loss, so that at the same steps it is the k-shot LoRA with another start. `seed`
orders the batches: the only randomness (the factors come from the adapter)."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import UsageError
from ..io.output import check_output_dir, staged_output
from .library_text import causal_lm_loader, endless_batches, pad_id, tokenizer_of, watched_loss
from .merge_to_adapter import REPORT
from .text_data import read_examples

FINETUNE_LR, FINETUNE_BATCH = 1e-3, 8


def finetuned_adapter(base: str, adapter: str | Path, data: str | Path, out: str | Path, steps: int, seed: int = 0,
                      progress: Callable[[int, float], None] | None = None, extra: dict | None = None) -> dict:
    """Fine-tune the PEFT adapter `adapter` of `base` on `data` for `steps` and write it to `out` (atomically);
    what its report records (with `extra`, e.g. how the start was found)."""
    from peft import PeftModel
    if steps < 1:
        raise UsageError(f"fine-tuning steps {steps}: give one or more.")
    out = Path(out)
    check_output_dir(out, "adapter")
    tok = tokenizer_of(base)
    examples = read_examples(data, tok, labelled=True)
    torch.manual_seed(seed)
    model = PeftModel.from_pretrained(causal_lm_loader(base)(), str(adapter), is_trainable=True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=FINETUNE_LR)
    losses: list[float] = []
    loss = watched_loss(losses, progress, lambda value, step: f"fine-tuning {adapter} on {data}: the loss became "
                        f"{value} at step {step}. Fix: check the examples, or fine-tune for fewer steps.")
    begun = time.perf_counter()
    model.train()
    for _, (ids, mask, labels) in zip(range(steps), endless_batches(examples, FINETUNE_BATCH, seed, pad_id(tok))):
        # the LoRA layers sit inside the base model: the reply loss runs it as the zoo's training does
        loss(model.get_base_model(), ids, mask, labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    report = {**(extra or {}), "finetune": {
        "start": str(adapter), "data_seen": {**examples.describe(labels=True), "steps": steps,
                                             "batch": FINETUNE_BATCH, "seed": seed},
        "lr": FINETUNE_LR, "optimizer": "AdamW", "trained_parameters": sum(p.numel() for p in trainable),
        "losses": losses, "seconds": round(time.perf_counter() - begun, 1)}}
    with staged_output(out, "adapter") as stage:
        model.save_pretrained(stage)
        (stage / REPORT).write_text(json.dumps(report, indent=1) + "\n")
    return {**report, "report_file": REPORT}
