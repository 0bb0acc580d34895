"""PEFT adapters for sequence classification (task type SEQ_CLS) read as the classifiers they were trained as.

PEFT trains such an adapter on `AutoModelForSequenceClassification.from_pretrained(BASE, num_labels=N)`: LoRA on the
body, and the head (BERT's `classifier`, RoBERTa's `classifier.dense`/`out_proj`, Llama's `score`) trained whole and
saved in the adapter as `modules_to_save`. The base checkpoint has no head (bert-base-uncased is a pre-training
checkpoint), so io/adapter.py, which checks every saved tensor against the base, would refuse the head. Here the
base is first seen as that classifier: its tensors plus the head's names and shapes, with a config that names the
class and its N classes (N read from the saved head). The adapter then reads as any full fine-tuned classifier
does: the body's tensors with their LoRA updates, and the head, which the base lacks (a merge drops or refuses it by
`tensor_rules.extra`; `taskfuse learn --spec` keeps it as that task's own).

A classifier tensor that neither the base nor the adapter holds (BERT's pooler over a masked-LM base) was drawn at
random when the adapter was trained and is lost: that is refused, since no reader can rebuild the classifier.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import AdapterError
from .adapter import (PEFT_PREFIX, AdapterCheckpoint, BaseNames, _adapter_tensors, read_adapter_config,
                      read_updates)
from .checkpoint import Checkpoint, TensorMeta

SEQ_CLS = "SEQ_CLS"
_LORA_PART = re.compile(r".+\.(lora_[A-Za-z_]+|lora_magnitude_vector)(\.weight)?")


def open_adapter(ref: str, adapter_dir: Path, base_ref: str | None = None,
                 base_dir: Path | None = None) -> AdapterCheckpoint:
    """The adapter over its base: as a classifier for a SEQ_CLS adapter, as the base's own architecture otherwise."""
    if read_adapter_config(ref, adapter_dir).get("task_type") == SEQ_CLS:
        return ClassifierAdapterCheckpoint.open(ref, adapter_dir, base_ref, base_dir)
    return AdapterCheckpoint.open(ref, adapter_dir, base_ref, base_dir)


class ClassifierAdapterCheckpoint(AdapterCheckpoint):
    """A SEQ_CLS adapter over its base, behind Checkpoint's interface with the classifier's tensor names."""

    @classmethod
    def open(cls, ref: str, adapter_dir: Path, base_ref: str | None = None,
             base_dir: Path | None = None) -> "ClassifierAdapterCheckpoint":
        peft_config = read_adapter_config(ref, adapter_dir)
        base_ref = base_ref or peft_config.get("base_model_name_or_path")
        if not base_ref:
            raise AdapterError(f"adapter {ref!r}: its adapter_config.json names no base_model_name_or_path. Fix: "
                               "name the base in the spec as BASE+ADAPTER.")
        base = Checkpoint.open(base_ref, base_dir)  # its own error names the base and what is wrong with it
        factors = Checkpoint(ref, adapter_dir, _adapter_tensors(ref, adapter_dir))
        classifier = BaseAsClassifier.of(ref, base, factors) or base
        updates, replaced = read_updates(ref, peft_config, factors, classifier)
        return cls(ref, classifier, factors, updates, replaced, peft_config)


class BaseAsClassifier:
    """The base as the classifier PEFT wrapped: the base's tensors that the classifier holds (not a pre-training
    head), the head's names and shapes (their values are the adapter's, which replace them, so they are never read
    from here) and the classifier's config."""

    def __init__(self, base: Checkpoint, body: set[str], head: dict[str, TensorMeta], config: dict):
        self.ref, self.root, self.config, self._base = base.ref, base.root, config, base
        self.tensors = {**{n: meta for n, meta in base.tensors.items() if n in body}, **head}

    @classmethod
    def of(cls, ref: str, base: Checkpoint, factors: Checkpoint) -> "BaseAsClassifier | None":
        """The base as the adapter's classifier; None where the base holds every tensor the adapter saves whole
        (a base saved as a classifier already, whose head the adapter's replaces as any modules_to_save does)."""
        from transformers import AutoConfig, AutoModelForSequenceClassification
        resolve = BaseNames(base)
        head = {}  # classifier name -> the adapter's tensor: saved whole, and not the base's
        for key in factors.tensors:
            name = (key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key).replace(".modules_to_save", "")
            if not _LORA_PART.fullmatch(name) and ".original_module." not in name and resolve(name) is None:
                head[name] = key
        if not head:
            return None
        settings = dict(base.config or {})
        model_type = settings.pop("model_type", None)
        try:
            config = AutoConfig.for_model(model_type, **settings)
            shapes = _class_shapes(AutoModelForSequenceClassification, config, 1)
        except (ValueError, KeyError, TypeError) as e:
            raise AdapterError(f"adapter {ref!r}: transformers builds no sequence classifier from its base "
                               f"{base.ref!r} (model type {model_type!r}: {e}). Fix: give the base the adapter was "
                               "trained on, with its config.json.") from e
        # the head's output layer is the tensor whose rows are the classes: one row with num_labels=1
        outputs = [n for n in head if n in shapes and shapes[n][0] == 1]
        if not outputs:
            raise AdapterError(f"adapter {ref!r}: none of its saved head tensors ({', '.join(sorted(head))}) is the "
                               f"output layer of {type(config).__name__.replace('Config', '')}'s sequence "
                               "classifier. Fix: give the base the adapter was trained on.")
        classes = factors.meta(head[outputs[0]]).shape[0]
        shapes = _class_shapes(AutoModelForSequenceClassification, config, classes)
        wrong = [f"{n} is {tuple(factors.meta(k).shape)}, the class's {shapes.get(n)}" for n, k in head.items()
                 if shapes.get(n) != tuple(factors.meta(k).shape)]
        lost = [n for n in shapes if n not in head and resolve(n) is None]
        if wrong or lost:
            listed = f"{', '.join(lost[:4])}{' …' if len(lost) > 4 else ''}"
            what = (f"its head does not fit the classifier with {classes} classes ({'; '.join(wrong)})" if wrong
                    else f"the classifier's {listed} is in neither the adapter nor its base {base.ref!r}: PEFT drew "
                    "it at random when the adapter was trained and did not save it, so no one can rebuild this "
                    "classifier")
            raise AdapterError(f"adapter {ref!r} (sequence classification): {what}. Fix: give the base the adapter "
                               "was trained on (one that holds these tensors, e.g. a pre-training checkpoint with "
                               "its pooler), or train the adapter with them in modules_to_save.")
        names = {str(i): f"LABEL_{i}" for i in range(classes)}
        config_dict = {**base.config, "architectures": [_class_name(config)], "id2label": names,
                       "label2id": {n: int(i) for i, n in names.items()}}
        saved = {n: factors.meta(k) for n, k in head.items()}
        body = {resolve(n) for n in shapes if n not in head}  # the base's pre-training head is no part of it
        return cls(base, body, {n: TensorMeta(n, m.shape, m.dtype, m.file) for n, m in saved.items()}, config_dict)

    def meta(self, name: str) -> TensorMeta:
        return self.tensors[name]

    def map(self, name: str) -> torch.Tensor | None:
        return self._base.map(name)

    def read(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        return self._base.read(name, out)


def _class_shapes(auto_class, config, classes: int) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape of the classifier built from `config` with `classes` classes, allocated on the
    meta device (no memory, no initialisation)."""
    config.num_labels = classes
    with torch.device("meta"):
        model = auto_class.from_config(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _class_name(config) -> str:
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    return MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES[config.model_type]

