"""LoRA experts on the LLM benchmark's base model, one per task: trained on the task's chat-formatted questions
with the loss on the reply only, cached by content (task data, recipe, base), resumable (an expert appears whole
or not at all), several trained at once in separate processes.

An expert is a PEFT adapter folder; its full-weight version is `BASE+ADAPTER`, which taskfuse merges exactly
(W + scaling·B·A, io/adapter.py) without writing the full model.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import random
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import ZooError
from ..io.cache_dir import cache_root
from ..io.output import staged_output
from .decoding import returned_cache, shared_opening, with_cache
from .evaluate import prompt_ids, reply_ids
from .tasks import LLMTask

RECORD = "taskfuse_llm_expert.json"


@dataclass(frozen=True)
class Recipe:
    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    steps: int = 30
    batch: int = 8
    lr: float = 1e-3
    seed: int = 0
    # the batch's shared opening (chat template, system turn, answer list, question) run once per step and its cache
    # repeated: the same loss with about half the tokens; in the cache key because the sums round differently
    shared_opening: bool = True


@dataclass(frozen=True)
class Expert:
    task: str
    adapter: Path
    record: dict

    def ref(self, base: Path) -> str:
        """The expert's full-weight version as a spec model: BASE+ADAPTER."""
        return f"{base}+{self.adapter}"


def expert_dir(base: Path, task: LLMTask, recipe: Recipe) -> Path:
    key = json.dumps({"base": base.name, "task": task.train_fingerprint(), "recipe": asdict(recipe)}, sort_keys=True)
    return cache_root() / "llm-experts" / f"{task.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def build_llm_zoo(base: Path, tasks: list[LLMTask], recipe: Recipe = Recipe(), workers: int = 2,
                  progress=None) -> dict[str, Expert]:
    """Every task's expert, trained where the cache has none (in `workers` processes, one torch thread each)."""
    folders = {t.name: expert_dir(base, t, recipe) for t in tasks}
    missing = [t for t in tasks if not (folders[t.name] / RECORD).exists()]
    if missing:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(base)
        missing.sort(key=lambda t: -_prompt_tokens(tok, t))  # longest first, so that the workers end together
        context = multiprocessing.get_context("spawn")  # torch and fork do not mix
        with ProcessPoolExecutor(min(workers, len(missing)), mp_context=context) as pool:
            futures = [pool.submit(train_expert, base, t, recipe, folders[t.name], 1 if workers > 1 else None)
                       for t in missing]
            for done, future in enumerate(futures, 1):
                try:
                    future.result()  # a worker's own error is raised here as it was
                except BrokenProcessPool as e:
                    raise ZooError(f"a process training the LLM experts died ({e}); it may have run out of memory. "
                                   "Experts finished before it are kept. Fix: run again with fewer workers.") from e
                if progress:
                    progress(done, len(missing), missing[done - 1].name)
    return {t.name: Expert(t.name, folders[t.name], json.loads((folders[t.name] / RECORD).read_text()))
            for t in tasks}


def _prompt_tokens(tok, task: LLMTask, sample: int = 64) -> float:
    """The mean token count of the task's first train prompts: what a training step costs goes with it (the
    benchmark's six experts took 92 to 222 s; in the tasks' own order the last started as the other worker ended)."""
    prompts = task.splits["train"][:sample]
    return sum(len(prompt_ids(tok, e.prompt)) for e in prompts) / max(len(prompts), 1)


def train_expert(base: Path, task: LLMTask, recipe: Recipe, out: Path, threads: int | None = None) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(recipe.seed)
    tok = AutoTokenizer.from_pretrained(base)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=recipe.rank, lora_alpha=recipe.alpha, target_modules=list(recipe.targets),
                                      lora_dropout=0.0, task_type="CAUSAL_LM"))
    examples = answer_pairs(tok, task)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=recipe.lr)
    batches, losses, start = sampled_batches(examples, tok, recipe.batch, recipe.seed), [], time.perf_counter()
    model.train()
    for _ in range(recipe.steps):
        ids, labels, mask = next(batches)
        shared = prompt_opening(ids, labels) if recipe.shared_opening else 0
        # float32: bfloat16 autocast ran 6x slower on this benchmark's CPUs (no bfloat16 matrix units)
        loss = reply_loss(model.get_base_model(), ids, mask, labels, shared)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(round(loss.item(), 4))
    record = {"task": task.name, "train_fingerprint": task.train_fingerprint(), "recipe": asdict(recipe),
              "base": str(base), "train_examples": len(examples), "losses": losses,
              "seconds": round(time.perf_counter() - start, 1)}
    with staged_output(out, "expert") as stage:
        model.save_pretrained(stage)
        (stage / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return out


def answer_pairs(tok, task: LLMTask) -> list[tuple[list[int], list[int]]]:
    """Every train question's prompt tokens (in the chat template) with its answer's reply tokens."""
    return [(prompt_ids(tok, e.prompt), reply_ids(tok, task.answers[e.answer])) for e in task.splits["train"]]


def sampled_batches(pairs, tok, batch: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Endless (ids, labels, mask) batches of `batch` pairs drawn without replacement within a batch, seeded: the
    experts' draws, which the routers that learn on the same answers (llm/routed.py) repeat."""
    order = random.Random(seed)
    while True:
        yield reply_batch(order.sample(pairs, min(batch, len(pairs))), tok)


def prompt_opening(ids: torch.Tensor, labels: torch.Tensor) -> int:
    """How many leading tokens the prompts of a `reply_batch` (each row's tokens before its first label) share,
    as `reply_loss` takes it; 0 for a single row, which has nothing to share."""
    if ids.shape[0] < 2:
        return 0
    starts = (labels != -100).int().argmax(1).tolist()
    return shared_opening([row[:s] for row, s in zip(ids.tolist(), starts)])


def reply_loss(causal_lm, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
               shared: int = 0) -> torch.Tensor:
    """transformers' causal-LM loss (next-token cross-entropy, mean over labelled tokens), with the output layer
    applied only where a label is: the 49k-word output layer over every prompt token was a fifth of each step.
    The first `shared` tokens, the same in every row and unlabelled, run once at batch size 1 (gradients flow
    through their repeated cache as through the rows)."""
    past = None
    if shared:
        past = returned_cache(causal_lm.model(input_ids=ids[:1, :shared], use_cache=True))
        past.batch_repeat_interleave(ids.shape[0])
    hidden = causal_lm.model(input_ids=ids[:, shared:], attention_mask=mask, **with_cache(past),
                             use_cache=bool(shared)).last_hidden_state[:, :-1]
    targets = labels[:, shared + 1:]
    keep = targets != -100
    return torch.nn.functional.cross_entropy(causal_lm.lm_head(hidden[keep]).float(), targets[keep])


def reply_batch(pairs, tok):
    """Right-padded prompt+reply rows; the loss sees only the reply tokens (labels −100 elsewhere)."""
    width = max(len(p) + len(r) for p, r in pairs)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.full((len(pairs), width), pad)
    labels = torch.full((len(pairs), width), -100)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for i, (p, r) in enumerate(pairs):
        ids[i, :len(p) + len(r)] = torch.tensor(p + r)
        labels[i, len(p):len(p) + len(r)] = torch.tensor(r)
        mask[i, :len(p) + len(r)] = 1
    return ids, labels, mask
