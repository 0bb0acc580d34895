"""One expert per prompt, picked by a router on a causal LM's reading of the prompt: Twin-Merging's MLP
(routing/twin.py) over the model's mean last hidden state over the chat-formatted prompt
(llm/task_models.prompt_features), trained on example prompts labelled only by the expert they belong to (no
answers). Decode-time fusion uses it when the task is not given (bench/routed_fusion.py, `taskfuse generate
--route-by`): a prompt names its task, where next-token distributions only hint at it."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import TaskDataError
from ..llm.task_models import prompt_features
from .twin import train_router


def train_prompt_router(model, tok, prompts: list[list[str]], seed: int = 0) -> nn.Module:
    """A router over len(`prompts`) experts, from `prompts[i]`, example prompts of expert i."""
    features = [prompt_features(model, tok, examples) for examples in prompts]
    labels = torch.cat([torch.full((len(f),), i) for i, f in enumerate(features)])
    return train_router(torch.cat(features), labels, len(prompts), seed=seed)


@torch.inference_mode()
def pick_experts(router: nn.Module, model, tok, prompts: list[str]) -> list[int]:
    """The expert the router sends each prompt to (its largest logit)."""
    return router(prompt_features(model, tok, prompts)).argmax(1).tolist()


def read_prompts(path: str | Path) -> list[str]:
    """Example prompts of one expert: a JSONL file of {"prompt": ...} (or {"text": ...}) records."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TaskDataError(f"cannot read example prompts {path}: {e}. Fix: give a UTF-8 JSONL file.") from None
    prompts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskDataError(f"{path}:{n}: not JSON ({e.msg}). Fix: one JSON object per line.") from None
        text = record.get("prompt", record.get("text")) if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise TaskDataError(f"{path}:{n}: no \"prompt\" (or \"text\") string. Fix: write "
                                "{\"prompt\": \"...\"} per line.")
        prompts.append(text)
    if not prompts:
        raise TaskDataError(f"example prompts {path} are empty. Fix: one {{\"prompt\": ...}} object per line.")
    return prompts
