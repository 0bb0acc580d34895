"""The benchmark's tasks as real Hugging Face sequence classifiers, the layout most users' classifier fine-tunes
have: each a BertForSequenceClassification fine-tuned from the benchmark's base (all-MiniLM-L6-v2, its pooler
included) with a fresh linear head on the pooled output, by the zoo's recipe (epochs, batch, rate, warm-up, decay,
word embeddings frozen); their base saved as BertForPreTraining, the class bert-base-uncased is published in (the
body under `bert.`, as the classifiers hold it). Built once and cached beside the zoo's experts.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..eval.encoder import Encoded, encode, load_tokenizer
from ..eval.tasks.data import Task
from ..io.cache_dir import cache_root
from ..io.output import staged_output
from ..zoo.build import Zoo
from ..zoo.recipe import Recipe

VERSION = 1  # of how the classifiers are trained: a new one trains them again
BATCH = 64  # examples per forward pass when scoring

# (task, done, total) training steps
ClassifierProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ClassifierZoo:
    base: Path
    classifiers: dict[str, Path]  # task -> its classifier's folder, in the zoo's task order


def build_classifier_zoo(zoo: Zoo, progress: ClassifierProgress | None = None) -> ClassifierZoo:
    root = cache_root() / "classifiers"
    base = root / f"base-v{VERSION}"
    if not (base / "config.json").is_file():
        _save_base(zoo.base_dir, base)
    folders = {}
    for task, expert in zoo.experts.items():
        # the zoo's expert key names the task's data and the recipe: a classifier of other data is another folder
        folders[task] = root / f"{expert.model_dir.parent.name}-v{VERSION}"
        if not (folders[task] / "config.json").is_file():
            _train(zoo.tasks[task], zoo.base_dir, zoo.variant.recipe, folders[task], progress)
    return ClassifierZoo(base, folders)


def _save_base(source: Path, out: Path) -> None:
    from transformers import BertForPreTraining
    torch.manual_seed(0)  # the pre-training heads, absent from the sentence encoder, are drawn: no merge reads them
    model = BertForPreTraining.from_pretrained(source)
    with staged_output(out, "expert") as stage:
        model.save_pretrained(stage)
        load_tokenizer(source).save_pretrained(stage)


def _train(task: Task, base: Path, recipe: Recipe, out: Path, progress: ClassifierProgress | None) -> None:
    from transformers import BertForSequenceClassification
    names = dict(enumerate(task.label_names))
    torch.manual_seed(recipe.seed)  # the head's draw, then dropout
    model = BertForSequenceClassification.from_pretrained(base, num_labels=len(names), id2label=names,
                                                          label2id={n: i for i, n in names.items()})
    model.bert.embeddings.word_embeddings.weight.requires_grad_(not recipe.freeze_word_embeddings)
    tokenizer = load_tokenizer(base)
    train = encode(tokenizer, task.splits["train"].texts, task.splits["train"].labels)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    total = math.ceil(len(train.ids) / recipe.batch_size) * recipe.epochs
    warm = max(1, int(total * recipe.warmup))  # linear warm-up, then linear decay, as the zoo's experts
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (total - s) / (total - warm + 1))))
    order = torch.Generator().manual_seed(recipe.seed)
    model.train()
    step = 0
    for _ in range(recipe.epochs):
        for rows, ids, mask in train.batches(recipe.batch_size, torch.randperm(len(train.ids), generator=order)
                                             .tolist()):
            loss = nn.functional.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, train.labels[rows])
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if progress:
                progress(task.name, step, total)
    with staged_output(out, "expert") as stage:
        model.eval().save_pretrained(stage)
        tokenizer.save_pretrained(stage)


@torch.inference_mode()
def accuracy(model: nn.Module, data: Encoded) -> float:
    """The share of `data`'s examples whose highest logit is their label."""
    right = 0
    for rows, ids, mask in data.batches(BATCH):
        right += int((model(input_ids=ids, attention_mask=mask).logits.argmax(-1) == data.labels[rows]).sum())
    return right / len(data.ids)
