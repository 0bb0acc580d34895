"""The heads of a learned merge of sequence classifiers: each model's own tensors (those the base lacks: its
classification head, BERT's pooler where the base has none) kept beside the merged body, in `heads/<i>/` (the
model's config.json and head.safetensors, i its place in the spec), and model i's classifier rebuilt from the two.

The merged body is an ordinary merge in the base's class, which `taskfuse merge` replays; the heads are not merged
(each task keeps its own classes), so they sit in a folder of their own, which the checkpoint reader never scans.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file
from torch import Tensor, nn

from ..errors import CheckpointError, UsageError
from ..io.checkpoint import Checkpoint

HEADS = "heads"


def write_heads(folder: Path, own: list[dict[str, Tensor]], configs: list[dict]) -> None:
    """`folder`/heads/<i>/ for every model, in the spec's order."""
    for i, (tensors, config) in enumerate(zip(own, configs)):
        head = Path(folder) / HEADS / str(i)
        head.mkdir(parents=True)
        (head / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file({name: t.contiguous() for name, t in tensors.items()}, str(head / "head.safetensors"))


def task_classifier(merged: str | Path, index: int) -> nn.Module:
    """Model `index`'s classifier (its place in the learned spec) on the merged body: its class from its config,
    every tensor the merged model holds under the same name, its own head's for the rest; in eval mode."""
    folder = Path(merged) / HEADS / str(index)
    if not (folder / "head.safetensors").is_file():
        held = sorted(p.name for p in (Path(merged) / HEADS).iterdir()) if (Path(merged) / HEADS).is_dir() else []
        raise UsageError(f"{merged} has no head {index} ({folder}); it holds heads {held or 'none'}. Fix: give the "
                         "folder `taskfuse learn --spec` wrote for your classifiers and a model's place in its spec.")
    return classifier_on_body(merged, folder)


def classifier_on_body(merged: str | Path, classifier: str | Path) -> nn.Module:
    """The classifier saved at `classifier` (a head folder, or a whole classifier) with every tensor the merged
    model at `merged` holds under the same name: a merge of classifiers' bodies serving one of them."""
    from transformers import AutoConfig, AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(classifier))
    body, own = Checkpoint.open(merged), Checkpoint.open(classifier)
    state = {}
    for name in model.state_dict():
        if name in body.tensors:
            state[name] = body.read(name)
        elif name in own.tensors:
            state[name] = own.read(name)
    lacking = [name for name in model.state_dict() if name not in state]
    if lacking:
        raise CheckpointError(f"neither the merged model {merged} nor {classifier} holds {lacking[0]} (and "
                              f"{len(lacking) - 1} more) of {type(model).__name__}. Fix: rebuild the folder with "
                              "`taskfuse learn --spec`; a merge alone holds no heads.")
    model.load_state_dict(state)
    return model.eval()
