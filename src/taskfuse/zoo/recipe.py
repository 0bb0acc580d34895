"""How experts are trained, and the zoo variants (full, quick, tiny) the benchmark builds."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..eval.tasks import BUILTIN, Sizes


@dataclass(frozen=True)
class Recipe:
    """Each task's head is zero-shot: the base encoder's embeddings of the label prompts (task.label_prompts()),
    times `logit_scale`. The encoder is fine-tuned with that head frozen, as the task-vector literature does with
    CLIP's zero-shot heads, so every expert stays in the base's feature space, a merged encoder is judged with the
    same heads, and "zero-shot" (base encoder, same head) is a true no-training reference."""

    seed: int = 0
    epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-4
    warmup: float = 0.1
    weight_decay: float = 0.01
    # The 30522×384 vocabulary table is half the encoder's parameters; a dense AdamW update of it doubles a CPU
    # step while fine-tunes barely move it. Task vectors therefore live in the transformer layers.
    freeze_word_embeddings: bool = True
    logit_scale: float = 20.0  # cosine similarities span [-1, 1]; 20 as in sentence-transformers' ranking losses
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_lr: float = 1e-3
    lora_targets: tuple[str, ...] = ("query", "key", "value", "dense")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ZooVariant:
    name: str
    tasks: tuple[str, ...]
    sizes: Sizes
    recipe: Recipe = field(default_factory=Recipe)
    learn_steps: int = 100  # optimiser steps of the benchmark's learned rows (AdaMerging, aTLAS)


VARIANTS = {
    "full": ZooVariant("full", tuple(BUILTIN), Sizes()),
    "quick": ZooVariant("quick", ("wordnet_noun_topic", "fortune_language", "manpage_section", "debian_section"),
                        Sizes(max_examples=560), learn_steps=60),
    "tiny": ZooVariant("tiny", ("wordnet_pos", "fortune_language"), Sizes(max_examples=100, min_class=8),
                       Recipe(epochs=1, batch_size=16), learn_steps=8),
}


def variant_named(name: str) -> ZooVariant:
    from ..errors import ZooError

    if name not in VARIANTS:
        raise ZooError(f"unknown zoo variant {name!r}. Fix: use one of {', '.join(VARIANTS)} "
                       "(full: 8 tasks, quick: 4 tasks and fewer examples, tiny: 2 tasks for tests).")
    return VARIANTS[name]
