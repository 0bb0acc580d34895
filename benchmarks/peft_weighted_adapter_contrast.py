"""One adapter at weight w through PEFT's add_weighted_adapter, against the adapter's own update w·ΔW, for plain
LoRA, rsLoRA and DoRA (PEFT issues 3004 and 3761), beside taskfuse's merge of the same adapter at the same weight.

    python benchmarks/peft_weighted_adapter_contrast.py

Tiny seeded Llama (transformers config) and adapters with every factor random; writes
benchmarks/results/peft-contrast/result.json (whole or not at all) and prints the table. Error: the largest
|merged − (W + w·ΔW)| over the q_proj weights, where ΔW is what PEFT's own merge_and_unload() adds for the adapter
alone.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

from taskfuse import api
from taskfuse.bench.provenance import code_commit, command_line, machine, write_result
from taskfuse.testing.checkpoints import build_model, save

OUT = Path(__file__).resolve().parent / "results" / "peft-contrast"
VARIANTS = {"LoRA": {}, "rsLoRA": {"use_rslora": True}, "DoRA": {"use_dora": True}}


def adapter(base: Path, out: Path, **options) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj"], init_lora_weights=False, **options))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.05)
    model.save_pretrained(out)
    return out


def q_weights(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.endswith("q_proj.weight")}


def main() -> None:
    from peft import PeftModel, __version__ as peft_version
    from transformers import AutoModelForCausalLM
    warnings.filterwarnings("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        base = save(build_model("llama", 0), root / "base")
        base_q = q_weights(load_file(base / "model.safetensors"))
        for variant, options in VARIANTS.items():
            path = adapter(base, root / variant, **options)
            own = q_weights(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), path)
                            .merge_and_unload().state_dict())
            for weight in (1.0, -1.0, 0.5):
                expected = {k: base_q[k] + weight * (own[k] - base_q[k]) for k in base_q}
                row = {"adapter": variant, "weight": weight, "update_size": max(
                    float((own[k] - base_q[k]).abs().max()) for k in base_q)}
                for how in ("linear", "cat", "svd"):
                    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), path, adapter_name="a")
                    model.add_weighted_adapter(["a"], [weight], "w", combination_type=how)
                    model.set_adapter("w")
                    got = q_weights(model.merge_and_unload().state_dict())
                    row[f"peft_{how}"] = max(float((got[k] - expected[k]).abs().max()) for k in base_q)
                out = root / f"tf-{variant}-{weight}"
                api.merge({"method": "task_arithmetic", "base": str(base),
                           "models": [{"path": str(path), "weight": weight}]}, out)
                got = q_weights(load_file(out / "model.safetensors"))
                row["taskfuse"] = max(float((got[k] - expected[k]).abs().max()) for k in base_q)
                rows.append(row)
    result = {"command": command_line(), "code": code_commit(), "machine": machine(), "peft": peft_version,
              "rows": rows}
    write_result(OUT, result, indent=1)
    print(table(result))


def table(result: dict) -> str:
    lines = [f"| adapter | weight | size of w·ΔW | PEFT {result['peft']} linear | cat | svd | taskfuse |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['adapter']} | {r['weight']} | {r['update_size'] * abs(r['weight']):.3g} | "
                     f"{r['peft_linear']:.3g} | {r['peft_cat']:.3g} | {r['peft_svd']:.3g} | {r['taskfuse']:.3g} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
