"""`taskfuse statistics`: a model's statistics on a JSONL of its task's text, for `regmean` or `fisher` merges.

gram works on any transformers model (the linear layers' inputs over every real token); fisher needs a likelihood:
a causal LM's, the next-token log-likelihood of each line's scored tokens (the completion's, when a line has one,
else every token), or a sequence classifier's, the log-likelihood of each line's class (programs/classifier_data.py),
one backward pass per line, with the data's own labels (the empirical Fisher), labels drawn from the model's
distribution, or FusionBench's estimator (programs/fisher_labels.py).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from ..errors import UsageError
from ..io.checkpoint import Checkpoint
from ..io.output import check_output_dir
from ..io.statistics_file import save_statistics
from ..io.transformers_model import load_model, load_tokenizer, model_class
from ..methods.registry import STATISTICS
from . import fisher_floor
from .classifier_data import class_logits, classifier_items, read_labelled_texts, text_width
from .fisher_labels import LABELS, fisher_of_labels
from .statistics import gram_statistics, normalized_fisher
from .text_data import TextExamples, batches_in_order, read_examples, scored_logits


CAUSAL_LM_LABELS = tuple(labels for labels in LABELS if labels != "expected")  # expected: a pass per vocabulary entry


def _forward(model: nn.Module, inputs: dict):
    return model(input_ids=inputs["ids"], attention_mask=inputs["mask"])


def gather_statistics(model_ref: str, kind: str, data: str | Path, out: str | Path, batch_size: int = 8,
                      normalize: bool = True, progress: Callable[[int, int], None] | None = None,
                      fisher_labels: str = "given", seed: int = 0, floor_before_scaling: float | None = None) -> Path:
    """Write the statistics folder `out` for the model at `model_ref` on the JSONL `data`; returns `out`.
    `floor_before_scaling` folds FusionBench's Fisher floor into them (programs/fisher_floor.py)."""
    if kind not in STATISTICS:
        raise UsageError(f"--kind {kind!r}: give one of {', '.join(STATISTICS)}.")
    if floor_before_scaling is not None:
        if kind != "fisher" or not normalize:
            raise UsageError(f"--floor-before-scaling for {model_ref!r}: it places the floor of a Fisher scaled to "
                             "unit norm. Fix: use it with --kind fisher and --normalize, or leave it out.")
        fisher_floor.check_floor(floor_before_scaling)
    if kind == "fisher" and fisher_labels not in LABELS:
        raise UsageError(f"--fisher-labels {fisher_labels!r} for {model_ref!r}: give one of {', '.join(LABELS)}.")
    check_output_dir(Path(out), "statistics")  # before loading anything
    ckpt = Checkpoint.open(model_ref)
    likelihood = _likelihood_of(ckpt, fisher_labels) if kind == "fisher" else None  # refused before loading
    tokenizer = load_tokenizer(ckpt)
    model = load_model(ckpt)
    width = text_width(tokenizer, ckpt.config or {})  # tokens per text: 256, or the model's positions if fewer
    if kind == "gram":
        examples = _within_positions(read_examples(data, tokenizer, labelled=False), width)
        batches = list(batches_in_order(examples, batch_size, _pad_id(tokenizer)))
        tensors = gram_statistics(model, (inputs for inputs, _ in batches), _forward)
        return save_statistics(out, tensors, kind, {"model": model_ref,
                                                          "data": {**examples.describe(False), "max_tokens": width}})
    # one squared gradient per line, or per batch of lines for weighted-sum (FusionBench's estimator)
    examples, items, logits = _likelihood_items(likelihood, ckpt, tokenizer, data, fisher_labels,
                                                batch_size if fisher_labels == "weighted-sum" else 1, width)
    tensors, count = fisher_of_labels(model, items, logits, fisher_labels, seed,
                                      (lambda done: progress(done, len(items))) if progress else None)
    lines = examples.describe(labels=False)["examples"]  # either kind of examples counts its lines there
    if count != lines:  # batches of lines: summed over batches, per line (in place: model-sized)
        for t in tensors.values():
            t.mul_(count / lines)
    record = {"model": model_ref, "data": {**examples.describe(labels=fisher_labels == "given"), "max_tokens": width},
              "fisher_labels": fisher_labels if fisher_labels != "sampled" else {"sampled": {"seed": seed}}}
    if normalize:
        tensors, record["fisher_norm"] = normalized_fisher(tensors)
    if floor_before_scaling is not None:
        tensors = fisher_floor.floor_before_scaling(tensors, record["fisher_norm"], floor_before_scaling)
        record["floor_before_scaling"] = floor_before_scaling
    record["normalized"] = normalize
    return save_statistics(out, tensors, kind, record)


def _likelihood_of(ckpt: Checkpoint, fisher_labels: str) -> str:
    """"classifier" or "causal_lm": whose likelihood the Fisher squares, from the class the config names (the one
    load_model builds); any other model is refused, as is a labelling the model's outputs rule out."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)
    name = model_class(ckpt.config).__name__  # transformers' own tables: GPT2LMHeadModel is a causal LM
    if name in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.values():
        return "classifier"
    if name not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        raise UsageError(f"model {ckpt.ref!r} ({name}) is neither a causal LM nor a sequence classifier, so it has no "
                         "likelihood of its data to take a Fisher of. Fix: use --kind gram, or give the model with "
                         "its head (config.json's architectures).")
    if fisher_labels not in CAUSAL_LM_LABELS:
        raise UsageError(f"--fisher-labels {fisher_labels!r} for {ckpt.ref!r}: give given (the text's own next "
                         "tokens), sampled (drawn from the model) or weighted-sum (every token weighted by √p in one "
                         "gradient per batch). The exact expectation takes one backward pass per vocabulary entry "
                         "and scored token, which no causal LM's vocabulary allows.")
    return "causal_lm"


def _likelihood_items(likelihood: str, ckpt: Checkpoint, tokenizer, data: str | Path, fisher_labels: str,
                      size: int, width: int):
    """The data's examples, its items of `size` lines and the logits whose likelihood the Fisher squares: a sequence
    classifier's class per line, or a causal LM's scored next tokens; each text cut to `width` tokens."""
    if likelihood == "classifier":
        examples = read_labelled_texts(data, ckpt.config, ckpt.ref, labelled=fisher_labels == "given")
        return examples, list(classifier_items(examples, tokenizer, size, width)), class_logits
    examples = _within_positions(read_examples(data, tokenizer, labelled=True), width)
    return examples, list(batches_in_order(examples, size, _pad_id(tokenizer))), scored_logits


def _within_positions(examples: TextExamples, width: int) -> TextExamples:
    """Each example cut to `width` tokens, where the model positions fewer than the texts' own cut (a small
    model's 128 positions): a longer one fails inside the model's position embedding."""
    if all(len(ids) <= width for ids in examples.ids):
        return examples
    return TextExamples(examples.path, tuple(ids[:width] for ids in examples.ids),
                        tuple(min(start, width - 2) for start in examples.scored_from))


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
