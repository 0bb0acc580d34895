"""The line that tells a user how to load an adapter taskfuse wrote: PEFT's auto class for its task type."""
from __future__ import annotations

import json
from pathlib import Path


def how_to_load(adapter_dir: Path) -> str:
    """e.g. "AutoPeftModelForCausalLM.from_pretrained('out')": the class PEFT itself maps the config's task type to
    (its auto_mapping is read by AutoPeftModel; an adapter with neither loads on its base with PeftModel)."""
    import peft.auto
    from peft import MODEL_TYPE_TO_PEFT_MODEL_MAPPING
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    target = MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(config.get("task_type") or "")
    # PEFT's auto classes each name the PeftModel class they build (getattr: a message must not fail on a new PEFT)
    name = next((c.__name__ for c in vars(peft.auto).values()
                 if target is not None and isinstance(c, type) and getattr(c, "_target_peft_class", None) is target),
                "AutoPeftModel" if config.get("auto_mapping") and target is None else None)
    where = repr(str(adapter_dir))
    return f"{name}.from_pretrained({where})" if name else f"PeftModel.from_pretrained(base, {where})"
