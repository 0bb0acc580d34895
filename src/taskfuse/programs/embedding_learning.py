"""Learning the coefficients of a user's embedding models: sentence-transformers fine-tunes of one base (or bare
encoders, which sentence-transformers reads with mean pooling), as Self Positioning (Li et al. 2024) merges text
embedding models trained on different tasks.

What is merged is the transformer the models share; what turns its token states into an embedding (pooling, a
Dense projection, normalisation) is the base's sentence-transformers modules, run frozen, and must agree across the
models (io/sentence_transformers_layout.py refuses otherwise, as the merge that writes the result does).
Each task's loss is an InfoNCE over cosine similarities times 20, sentence-transformers'
MultipleNegativesRankingLoss: a text against its own positive with the batch's other positives as negatives, or a
text against its class's label text with the task's other labels as negatives (programs/embedding_data.py). Texts
and keys are embedded by the merged model in one forward, so the gradient reaches Λ from both sides.
AdaMerging's entropy needs a classifier's predictions, which an embedding model has none of: it is refused.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import IncompatibleInputsError, UsageError
from ..io.checkpoint import Checkpoint
from ..io.sentence_transformers_layout import sentence_transformers_layout
from ..spec.model import MergeSpec
from .batch_order import shuffled_batches
from .embedding_data import LABELS, PAIRS, EmbeddingExamples, read_embedding_examples
from .learn import LearnProgress, TaskBatches
from .learning_loop import learn_coefficients
from .merge_view import BoundMerge
from .spec_learning import SpecLearned, SpecLearning, check_spec_for_learning, task_vector
from .spec_view import check_learnable, learning_view

LOGIT_SCALE = 20.0  # MultipleNegativesRankingLoss's scale: cosine similarity / temperature 0.05


class SimilarityHead(nn.Module):
    """(embeddings of n texts then of their keys, n) -> (n, keys) scaled cosine similarities."""

    def forward(self, pair: tuple[Tensor, int]) -> Tensor:
        embeddings, n = pair
        unit = nn.functional.normalize(embeddings, dim=-1)
        return LOGIT_SCALE * unit[:n] @ unit[n:].T


def learn_for_embeddings(spec: MergeSpec, data_files: list[str], how: SpecLearning, per_class: int | None = None,
                         progress: LearnProgress | None = None, max_tokens: int | None = None,
                         slerp: bool = False) -> SpecLearned:
    """Fit Λ (or Self Positioning's weights and scale, with `slerp`) for the spec's embedding models, each on its own
    task's pairs or labelled texts (`per_class`: the first k texts of each class), cut to `max_tokens` tokens (the
    base's max_seq_length by default)."""
    from sentence_transformers import SentenceTransformer

    check_spec_for_learning(spec, data_files)
    if how.recipe.objective == "entropy":
        raise UsageError("AdaMerging minimises the entropy of a classifier's predictions, and an embedding model "
                         "makes none. Fix: learn with atlas or atlas_fewshot (InfoNCE on your pairs or labelled "
                         "texts), or self_positioning.")
    check_learnable(how, slerp)
    if max_tokens is not None and max_tokens < 1:
        raise UsageError(f"--max-tokens {max_tokens}: give at least 1 token per text.")
    examples = [read_embedding_examples(f, entry.path) for f, entry in zip(data_files, spec.models)]
    if per_class:
        examples = [_probe_set(data, per_class, slerp) for data in examples]
    # the models' modules (pooling, Dense, normalisation) must be the base's before any model loads
    sentence_transformers_layout(Path(spec.base), {e.path: Path(e.path) for e in spec.models if Path(e.path).is_dir()})
    model = SentenceTransformer(spec.base, device="cpu")
    body = _transformer(model, spec.base).float().eval()
    modules = nn.Sequential(*list(model)[1:]).float().eval().requires_grad_(False)
    theta0 = {n: p.detach() for n, p in body.named_parameters()}
    checkpoints = [Checkpoint.open(entry.path) for entry in spec.models]
    for ckpt, entry in zip(checkpoints, spec.models):
        _check_holds_body(ckpt, theta0, entry.path, spec.base)
    vectors = [task_vector(c, theta0, f"model {entry.path}") for c, entry in zip(checkpoints, spec.models)]
    view = learning_view(body, theta0, vectors, how, spec.seed, slerp)
    width = max_tokens or model.max_seq_length or 256
    tasks = {entry.path: TaskBatches(SimilarityHead(), _stream(data, model.tokenizer, how.batch_size, how.seed + i,
                                                               width), _features_with(modules))
             for i, (entry, data) in enumerate(zip(spec.models, examples))}
    torch.manual_seed(how.seed)
    started = time.perf_counter()
    losses = learn_coefficients(view, tasks, how.recipe, progress, step=how.step)
    seen = [{**data.describe(width), **({"per_class": per_class} if per_class and data.kind == LABELS else {})}
            for data in examples]
    return SpecLearned(view, losses, time.perf_counter() - started, seen)


def _transformer(model, base: str) -> nn.Module:
    first = model[0]
    body = getattr(first, "model", None)  # sentence-transformers 6 names it `model`, earlier ones `auto_model`
    body = body if isinstance(body, nn.Module) else getattr(first, "auto_model", None)
    if not isinstance(body, nn.Module):
        raise IncompatibleInputsError(f"base {base}: its first sentence-transformers module is a "
                                      f"{type(first).__name__}, not a transformer whose weights taskfuse merges. "
                                      "Fix: learn over models whose first module is Transformer.")
    return body


def _check_holds_body(ckpt: Checkpoint, theta0: dict[str, Tensor], ref: str, base: str) -> None:
    lacking = [n for n in theta0 if n not in ckpt.tensors]
    if lacking:
        raise IncompatibleInputsError(
            f"model {ref} lacks {len(lacking)} of base {base}'s {len(theta0)} transformer tensors, e.g. {lacking[0]} "
            f"(it holds e.g. {next(iter(ckpt.tensors), 'nothing')}). Fix: learn over embedding models fine-tuned from "
            "this base and saved as it is (SentenceTransformer.save, or the bare model's save_pretrained).")


def _probe_set(data: EmbeddingExamples, k: int, slerp: bool) -> EmbeddingExamples:
    if data.kind == PAIRS and not slerp:
        raise UsageError(f"{data.path} holds pairs, which have no classes to take {k} examples of. Fix: learn with "
                         f"atlas on a file of the pairs you want it to see.")
    return data.first_per_class(k)


def _features_with(modules: nn.Module):
    """The merged transformer's token states through the base's modules: the texts' embeddings, then the keys'."""
    def features(bound: BoundMerge, inputs: dict) -> tuple[Tensor, int]:
        states = bound(input_ids=inputs["ids"], attention_mask=inputs["mask"]).last_hidden_state
        out = modules({"token_embeddings": states, "attention_mask": inputs["mask"]})
        return out["sentence_embedding"], inputs["texts"]
    return features


def _stream(data: EmbeddingExamples, tokenizer, batch_size: int, seed: int, width: int):
    """A task's endless stream of batches in a new seeded order every pass: each batch's texts, then its keys (the
    batch's positives, or every label text), and each text's key index."""
    def stream() -> Iterator[tuple[dict, Tensor]]:
        for rows in shuffled_batches(len(data.texts), batch_size, seed):
            if data.kind == PAIRS and len(rows) < 2:
                continue  # a pair alone has no negative: its loss is 0 whatever Λ is
            if data.kind == PAIRS:
                keys, targets = [data.positives[r] for r in rows], list(range(len(rows)))
            else:
                keys, targets = list(data.label_names), [data.labels[r] for r in rows]
            encoded = tokenizer([data.texts[r] for r in rows] + keys, padding=True, truncation=True,
                                max_length=width, return_tensors="pt")
            yield ({"ids": encoded["input_ids"], "mask": encoded["attention_mask"], "texts": len(rows)},
                   torch.tensor(targets))
    return stream
