"""Learning the coefficients of a user's sequence classifiers (`*ForSequenceClassification` fine-tunes of one base,
each with its own head), as AdaMerging and FusionBench merge BERT/RoBERTa fine-tunes of GLUE tasks.

Only what the base holds is merged: the body's tensors, under the name the classifier class gives its body (BERT's
`bert.`, RoBERTa's `roberta.`), so the base is saved in a class that wraps the body the same way (a pre-training or
masked-LM checkpoint, as bert-base-uncased and roberta-base are). Every tensor a model holds and the base does not
(its classification head; BERT's pooler where the base has none) is that model's own: each task's predictions come
from the merged body and its own head, and the output keeps every head beside the merged model (programs/classifier_heads.py).
Memory: the base's body, the T task vectors and the T heads; each model is loaded whole once, for its head, then
dropped.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, IncompatibleInputsError, UsageError
from ..io.checkpoint import Checkpoint
from ..io.classifier_adapter import ClassifierAdapterCheckpoint
from ..io.transformers_model import load_model
from ..spec.model import MergeSpec
from .batch_order import shuffled_batches
from .classifier_data import MAX_TOKENS, LabelledTexts, read_labelled_texts, text_width
from .few_shot import first_per_class
from .learning_loop import learn_coefficients
from .learn import LearnProgress, TaskBatches
from .merge_view import BoundMerge
from .spec_models import CLASSIFIER, spec_model_kind
from .spec_learning import SpecLearned, SpecLearning, check_spec_for_learning, task_vector
from .spec_view import check_learnable, learning_view

# the replayed merge: the base's tensors the models lack (a masked-LM head) are the base's, the models' own (their
# heads) are left to HEADS
CLASSIFIER_TENSOR_RULES = {"missing": "copy_base", "extra": "drop"}


def is_classifier_spec(spec: MergeSpec) -> bool:
    """Whether the spec's models are sequence classifiers or their SEQ_CLS adapters (all of them; a mix of kinds is
    refused)."""
    return spec_model_kind(spec) == CLASSIFIER


class _GivenBody(nn.Module):
    """Stands where a classifier's body was: returns the merged body's outputs computed before the head runs."""

    def __init__(self):
        super().__init__()
        self.outputs = None

    def forward(self, *args, **kwargs):
        return self.outputs


class OwnHead(nn.Module):
    """A model's classifier with its body taken out: (body outputs, inputs) -> that model's logits, through the
    class's own forward, so whatever the class does after its body (BERT's pooled output, RoBERTa's first token,
    a decoder's last real token) is done as the model does it."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.prefix = classifier.base_model_prefix
        setattr(classifier, self.prefix, _GivenBody())  # the body's weights go with it
        self.classifier = classifier.eval().requires_grad_(False)

    def forward(self, pair: tuple) -> Tensor:
        outputs, inputs = pair
        given = getattr(self.classifier, self.prefix)
        given.outputs = outputs
        try:
            return self.classifier(input_ids=inputs["ids"], attention_mask=inputs["mask"]).logits
        finally:
            given.outputs = None


class PrefixedBody(nn.Module):
    """The classifiers' body under the name their class gives it, so its parameters carry the checkpoints' names
    (`bert.encoder.…`) and the learned coefficients name the tensors the streaming engine merges."""

    def __init__(self, prefix: str, body: nn.Module):
        super().__init__()
        self.prefix = prefix
        setattr(self, prefix, body)

    def forward(self, **kwargs):
        return getattr(self, self.prefix)(**kwargs)


@dataclass
class ClassifierLearned(SpecLearned):
    own: list[dict[str, Tensor]]  # per model, the tensors the base lacks (its head), by checkpoint name
    configs: list[dict]  # per model, its config.json


def learn_for_classifiers(spec: MergeSpec, data_files: list[str], how: SpecLearning, per_class: int | None = None,
                          progress: LearnProgress | None = None,
                          max_tokens: int = MAX_TOKENS) -> ClassifierLearned:
    """Fit Λ for the spec's classifiers, each on its own task's texts through its own head (`per_class`: the first
    k examples of each class of a labelled file, aTLAS few-shot), each text cut to `max_tokens` tokens (or the
    model's positions, if fewer): as many as the classifiers were trained to read."""
    if max_tokens < 1:
        raise UsageError(f"--max-tokens {max_tokens}: give at least 1 token per text.")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    check_spec_for_learning(spec, data_files)
    check_learnable(how)
    base = Checkpoint.open(spec.base)
    checkpoints = [Checkpoint.open(entry.path) for entry in spec.models]
    labelled = how.recipe.objective == "cross_entropy"
    # every file read and its labels checked against its model's head before any model is loaded
    texts = [read_labelled_texts(f, c.config or {}, f"model {entry.path}", labelled)
             for f, c, entry in zip(data_files, checkpoints, spec.models)]
    if labelled and per_class:
        texts = [_first_per_class(data, per_class) for data in texts]
    def load(i: int) -> nn.Module:  # an adapter's classifier is built from what its checkpoint reads
        if isinstance(checkpoints[i], ClassifierAdapterCheckpoint):
            return load_model(checkpoints[i])  # its config names the classifier class; float32, eval mode
        return AutoModelForSequenceClassification.from_pretrained(spec.models[i].path, dtype=torch.float32).eval()

    # the body's name in the first model's class, read from its config where transformers names the class, so a
    # base without it is refused before any model loads
    prefix = _declared_prefix(checkpoints[0])
    first = None if prefix else load(0)
    prefix = prefix or first.base_model_prefix
    body_names = _body_names(base, prefix, spec.base)
    _check_models_hold(checkpoints, body_names)
    first = first or load(0)  # its body, set to the base's weights, is the one every task runs
    module = PrefixedBody(prefix, getattr(first, prefix)).eval()
    theta0 = _load_body(module, body_names, base, spec.models[0].path)
    vectors = [task_vector(c, theta0, f"model {entry.path}") for c, entry in zip(checkpoints, spec.models)]
    view = learning_view(module, theta0, vectors, how, spec.seed)
    tokenizer = AutoTokenizer.from_pretrained(spec.base)
    own, configs, tasks = [], [], {}
    for i, (entry, ckpt) in enumerate(zip(spec.models, checkpoints)):
        classifier = first if i == 0 else load(i)
        if classifier.base_model_prefix != prefix:
            raise IncompatibleInputsError(f"model {entry.path} is a {type(classifier).__name__}, its body under "
                                          f"`{classifier.base_model_prefix}.` where the first model's is under "
                                          f"`{prefix}.`. Fix: learn over classifiers of one architecture.")
        own.append({n: ckpt.read(n) for n in ckpt.tensors if n not in base.tensors and ckpt.meta(n).dtype
                    .is_floating_point})
        configs.append(ckpt.config or {})
        body_own = {n: t.float() for n, t in own[-1].items() if n.startswith(f"{prefix}.")}
        _check_body_covered(module, body_own, theta0, entry.path)
        width = text_width(tokenizer, configs[-1], max_tokens)
        tasks[entry.path] = TaskBatches(OwnHead(classifier), _stream(texts[i], tokenizer, how.batch_size, how.seed + i,
                                                                     width), _features_with(body_own))
    torch.manual_seed(how.seed)
    started = time.perf_counter()
    losses = learn_coefficients(view, tasks, how.recipe, progress, step=how.step)
    seen = [{**data.describe(labelled), "max_tokens": max_tokens,
             **({"per_class": per_class} if labelled and per_class else {})} for data in texts]
    return ClassifierLearned(view, losses, time.perf_counter() - started, seen, own, configs)


def _declared_prefix(model: Checkpoint) -> str | None:
    """The `base_model_prefix` of the class model's config names (BertForSequenceClassification: `bert`), or None
    where transformers has no such class."""
    import transformers
    architecture = ((model.config or {}).get("architectures") or [""])[0]
    prefix = getattr(getattr(transformers, architecture, None), "base_model_prefix", None) if architecture else None
    return prefix if isinstance(prefix, str) and prefix else None


def _body_names(base: Checkpoint, prefix: str, ref: str) -> list[str]:
    names = [n for n, meta in base.tensors.items() if n.startswith(f"{prefix}.") and meta.dtype.is_floating_point]
    if not names:
        raise IncompatibleInputsError(
            f"base {ref} holds no tensor under `{prefix}.`, where the classifiers keep their body (a bare body "
            f"checkpoint names its tensors without it, e.g. `embeddings.…`), so the merge could not match them by "
            f"name. Fix: save the base in a class that wraps its body the same way, e.g. "
            f"AutoModelForMaskedLM.from_pretrained(BASE).save_pretrained(DIR), and name DIR as the base.")
    return names


def _check_models_hold(checkpoints: list[Checkpoint], body_names: list[str]) -> None:
    for ckpt in checkpoints:
        lacking = [n for n in body_names if n not in ckpt.tensors]
        if lacking:
            raise IncompatibleInputsError(f"model {ckpt.ref} lacks {len(lacking)} of the base's body tensors, e.g. "
                                          f"{lacking[0]}. Fix: learn over classifiers fine-tuned from this base.")


def _load_body(module: PrefixedBody, body_names: list[str], base: Checkpoint, first: str) -> dict[str, Tensor]:
    """The body's parameters set to the base's, and returned as θ₀ (the same storage); the few the base lacks keep
    the first model's values, and every model overrides them with its own."""
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name in body_names:
            if name not in params:
                continue  # a tensor the class does not use (e.g. a position-id buffer an older version saved)
            value = base.read(name)
            if params[name].shape != value.shape:
                raise IncompatibleInputsError(f"base tensor {name} has shape {tuple(value.shape)}, model {first}'s "
                                              f"{tuple(params[name].shape)}. Fix: learn over classifiers "
                                              "fine-tuned from this base.")
            params[name].copy_(value)
    return {name: params[name].detach() for name in body_names if name in params}


def _check_body_covered(module: PrefixedBody, body_own: dict[str, Tensor], theta0: dict[str, Tensor],
                        model: str) -> None:
    for name, _ in module.named_parameters():
        if name not in theta0 and name not in body_own:
            raise CheckpointError(f"model {model} lacks tensor {name} of its body, which the base lacks too: nothing "
                                  "would set it. Fix: learn over complete classifier checkpoints (save_pretrained).")


def _features_with(body_own: dict[str, Tensor]):
    """The merged body's outputs with this model's own body tensors (e.g. its pooler), and the inputs its head
    reads."""
    def features(bound: BoundMerge, inputs: dict) -> tuple:
        run = BoundMerge(bound.base, {**bound.parameters, **body_own}) if body_own else bound
        return run(input_ids=inputs["ids"], attention_mask=inputs["mask"]), inputs
    return features


def _first_per_class(data: LabelledTexts, k: int) -> LabelledTexts:
    """The first `k` examples of each class, in file order (aTLAS few-shot)."""
    rows = first_per_class(data.labels, k)
    return LabelledTexts(data.path, tuple(data.texts[i] for i in rows), tuple(data.labels[i] for i in rows))


def _stream(data: LabelledTexts, tokenizer, batch_size: int, seed: int, width: int):
    """A task's endless stream of padded batches in a new seeded order every pass."""
    def stream() -> Iterator[tuple[dict, Tensor]]:
        for rows in shuffled_batches(len(data.texts), batch_size, seed):
            encoded = tokenizer([data.texts[r] for r in rows], padding=True, truncation=True, max_length=width,
                                return_tensors="pt")
            yield ({"ids": encoded["input_ids"], "mask": encoded["attention_mask"]},
                   torch.tensor([data.labels[r] for r in rows]))
    return stream
