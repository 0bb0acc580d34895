"""Building a PEFT LoRA adapter folder: factors per module, tensors stored whole, and the adapter_config.json that
makes PeftModel.from_pretrained apply exactly B·A (scaling 1) to each module."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..io.adapter import ADAPTER_CONFIG, PEFT_PREFIX
from ..io.output import staged_output


class AdapterBuilder:
    def __init__(self):
        self.tensors: dict[str, torch.Tensor] = {}
        self.ranks: dict[str, int] = {}
        self.kinds: dict[str, str] = {}
        self.whole: dict[str, torch.Tensor] = {}  # full tensor name → its value in the output

    def add_factors(self, module: str, kind: str, a: torch.Tensor, b: torch.Tensor) -> None:
        """B·A (transposed for conv1d and embedding modules, as PEFT applies them) is the module's update."""
        suffix = ("lora_embedding_A", "lora_embedding_B") if kind == "embedding" else ("lora_A.weight",
                                                                                       "lora_B.weight")
        self.tensors[f"{PEFT_PREFIX}{module}.{suffix[0]}"] = a.float().contiguous()
        self.tensors[f"{PEFT_PREFIX}{module}.{suffix[1]}"] = b.float().contiguous()
        self.ranks[module], self.kinds[module] = a.shape[0], kind

    def add_whole(self, name: str, value: torch.Tensor) -> None:
        self.whole[name] = value.float().contiguous()

    def __bool__(self) -> bool:
        return bool(self.ranks or self.whole)

    def finish(self, base_ref: str, siblings: dict[str, torch.Tensor] | None = None,
               task: dict | None = None) -> tuple[dict, dict]:
        """(tensors, config). A changed bias of a LoRA module is stored as PEFT's bias="all" stores it; any other
        module with a tensor stored whole goes to modules_to_save with all of its tensors (`siblings` supplies
        the unchanged ones, name → value). `task`: the config's task_type (and auto_mapping), adapter_task.py's."""
        tensors = dict(self.tensors)
        biases = [n for n in self.whole if n.endswith(".bias") and n.rpartition(".")[0] in self.ranks]
        to_save = sorted({n.rpartition(".")[0] for n in self.whole if n not in biases})
        for name, value in self.whole.items():
            module = name.rpartition(".")[0]
            key = f"{PEFT_PREFIX}{module}.base_layer.bias" if name in biases else f"{PEFT_PREFIX}{name}"
            tensors[key] = value
        for name, value in (siblings or {}).items():
            if name.rpartition(".")[0] in to_save and f"{PEFT_PREFIX}{name}" not in tensors:
                tensors[f"{PEFT_PREFIX}{name}"] = value.float().contiguous()
        common = max(self.ranks.values(), default=1)
        differing = {m: r for m, r in self.ranks.items() if r != common}
        config = {"peft_type": "LORA", "base_model_name_or_path": base_ref, "task_type": None,
                  "inference_mode": True, "r": common, "lora_alpha": common, "rank_pattern": differing,
                  "alpha_pattern": dict(differing), "target_modules": sorted(self.ranks),
                  "modules_to_save": to_save or None, "bias": "all" if biases else "none",
                  "fan_in_fan_out": any(k == "conv1d" for k in self.kinds.values()), "lora_dropout": 0.0,
                  "use_rslora": False, "use_dora": False, "init_lora_weights": True, **(task or {})}
        return tensors, config

    def siblings_needed(self) -> set[str]:
        """Modules whose other tensors finish() must be given (modules_to_save stores whole modules)."""
        return {n.rpartition(".")[0] for n in self.whole} - set(self.ranks)


def write_adapter(out: Path, tensors: dict[str, torch.Tensor], config: dict, report_name: str,
                  report: dict) -> None:
    with staged_output(Path(out), "adapter") as stage:
        save_file(tensors, stage / "adapter_model.safetensors", metadata={"format": "pt"})
        (stage / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        (stage / report_name).write_text(json.dumps(report, indent=1) + "\n")
