"""The rows every merge is compared with: the base encoder (zero-shot with each expert's head), the full
fine-tuned experts and the LoRA experts, each on its own task."""
from __future__ import annotations

from ..eval.encoder import load_encoder
from ..eval.harness import Evaluator, Score
from ..zoo.build import Zoo
from ..zoo.train import peft_quietly


def lora_encoder(zoo: Zoo, task: str):
    """The base encoder with the task's PEFT adapter folded in (W + BA), as a plain BERT module."""
    from peft import PeftModel
    with peft_quietly():
        return PeftModel.from_pretrained(load_encoder(zoo.base_dir), str(zoo.experts[task].lora_dir)).merge_and_unload()


def reference_scores(zoo: Zoo, evaluator: Evaluator) -> dict[str, dict[str, Score]]:
    """{"zero_shot": per task, "expert": per task (own task), "lora_expert": per task (own task)}."""
    zero_shot = evaluator.score(load_encoder(zoo.base_dir))
    experts = {t: evaluator.score_task(e.model_dir, t) for t, e in zoo.experts.items()}
    lora = {t: evaluator.score_task(lora_encoder(zoo, t), t) for t in zoo.experts}
    return {"zero_shot": zero_shot, "expert": experts, "lora_expert": lora}
