"""The PEFT task type an adapter written by taskfuse declares, so that PEFT's AutoPeftModelFor* classes load it.

PEFT's auto classes pick the model class from adapter_config.json: its `task_type`, or, for an adapter of none, the
`auto_mapping` PEFT records of the class it wrapped. With neither, `AutoPeftModelForCausalLM.from_pretrained`
refuses the folder ("Cannot infer the auto class from the config"). An adapter's task type is its own config's,
else the class its auto_mapping names, else its base's architecture; a full model's is its architecture. Each
architecture is placed by transformers' own auto mappings, as PEFT's auto classes load them.
"""
from __future__ import annotations

# transformers' auto mapping whose classes a PEFT task type's auto class loads (AutoModelForCausalLM, ...)
TASK_TYPE_MAPPINGS = (("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "CAUSAL_LM"),
                      ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", "SEQ_CLS"),
                      ("MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES", "TOKEN_CLS"),
                      ("MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES", "QUESTION_ANS"),
                      ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "SEQ_2_SEQ_LM"),
                      ("MODEL_MAPPING_NAMES", "FEATURE_EXTRACTION"))  # the bare body: BertModel, LlamaModel, ...


def task_type_of_architecture(architecture: str | None) -> str | None:
    """The PEFT task type whose auto class loads `architecture`, or None (a masked LM, a vision model, ...)."""
    from transformers.models.auto import modeling_auto
    for mapping, task_type in TASK_TYPE_MAPPINGS:
        for names in getattr(modeling_auto, mapping).values():
            if architecture in ((names,) if isinstance(names, str) else names):
                return task_type
    return None


def architecture(model_config: dict | None) -> str | None:
    return ((model_config or {}).get("architectures") or [None])[0]


def task_type_of(model) -> str | None:
    """The task type of one opened model (a Checkpoint or an AdapterCheckpoint)."""
    peft_config = getattr(model, "peft_config", None)
    if peft_config is not None:
        if peft_config.get("task_type"):
            return peft_config["task_type"]
        wrapped = (peft_config.get("auto_mapping") or {}).get("base_model_class")
        if wrapped:
            return task_type_of_architecture(wrapped)
    return task_type_of_architecture(architecture(model.config))


def task_fields(models: list, base_config: dict | None) -> dict:
    """The adapter_config.json fields that say what the output adapts: the models' one task type; where they
    have none or differ, the base's class as PEFT's auto_mapping (which only the generic AutoPeftModel reads)."""
    import transformers
    types = {task_type_of(m) for m in models}
    if len(types) == 1 and None not in types:
        return {"task_type": types.pop()}
    base_class = architecture(base_config)
    if base_class and hasattr(transformers, base_class):
        return {"task_type": None, "auto_mapping": {"base_model_class": base_class, "parent_library": "transformers"}}
    return {"task_type": None}
