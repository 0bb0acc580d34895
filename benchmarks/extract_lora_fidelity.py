"""How well `taskfuse extract-lora` keeps a full fine-tune: the benchmark zoo's full experts, each extracted at
several ranks, reloaded with PEFT (PeftModel.from_pretrained on the base, then merge_and_unload), judged on the
expert's own test split beside the expert itself and the LoRA expert trained at rank 8.

    python benchmarks/extract_lora_fidelity.py                     # full zoo, ranks 8 16 32 64 and energy 0.9
    python benchmarks/extract_lora_fidelity.py --variant tiny --ranks 4

Writes benchmarks/results/extract-lora/result.json and results.md (the command, commit and machine recorded).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from taskfuse.bench.provenance import code_commit, command_line, machine, write_result
from taskfuse.bench.references import lora_encoder
from taskfuse.eval.encoder import embed_all, load_encoder
from taskfuse.eval.harness import Evaluator, mean
from taskfuse.io.output import check_output_dir
from taskfuse.programs.extract_lora import RankRule, extract_lora
from taskfuse.zoo.build import build_zoo
from taskfuse.zoo.recipe import variant_named
from taskfuse.zoo.train import peft_quietly

OUT = Path(__file__).resolve().parent / "results" / "extract-lora"


def reload(base_dir: Path, adapter: Path):
    from peft import PeftModel
    with peft_quietly():
        return PeftModel.from_pretrained(load_encoder(base_dir), str(adapter)).merge_and_unload().eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="full")
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--energy", type=float, nargs="*", default=[0.9])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    check_output_dir(args.out, "report")  # before the run, not after it
    started, code = time.perf_counter(), code_commit()
    zoo = build_zoo(variant_named(args.variant))
    test = Evaluator(zoo.tasks, {t: e.head() for t, e in zoo.experts.items()}, "test")
    rules = [RankRule(rank=r) for r in args.ranks] + [RankRule(energy=e) for e in args.energy]
    rows = []
    for task, expert in zoo.experts.items():
        model = load_encoder(expert.model_dir)
        reference = embed_all(model, test.data[task])
        row = {"task": task, "expert": test.score_task(model, task).accuracy,
               "lora_expert_rank8": test.score_task(lora_encoder(zoo, task), task).accuracy, "extracted": []}
        for rule in rules:
            with tempfile.TemporaryDirectory() as work:
                extraction = extract_lora(expert.model_dir, zoo.base_dir, Path(work) / "lora", rule)
                size = (Path(work) / "lora" / "adapter_model.safetensors").stat().st_size
                reloaded = reload(zoo.base_dir, Path(work) / "lora")
            cosine = torch.nn.functional.cosine_similarity(embed_all(reloaded, test.data[task]), reference).mean()
            summary = extraction.summary()
            row["extracted"].append({
                "rule": f"rank {rule.rank}" if rule.rank else f"energy {rule.energy}",
                "accuracy": test.score_task(reloaded, task).accuracy, "rank": summary["rank"],
                "relative_error_mean": summary["relative_error"]["mean"], "adapter_mib": round(size / 2**20, 2),
                "embedding_cosine_to_expert": float(cosine), "seconds": summary["seconds"]})
            print(task, row["extracted"][-1], flush=True)
        rows.append(row)
    labels = [e["rule"] for e in rows[0]["extracted"]]
    averages = {label: mean(r["extracted"][i]["accuracy"] / r["expert"] for r in rows)
                for i, label in enumerate(labels)}
    result = {"command": command_line(), "code": code, "machine": machine(), "variant": args.variant, "rows": rows,
              "average_normalized": averages,
              "lora_expert_rank8_normalized": mean(r["lora_expert_rank8"] / r["expert"] for r in rows),
              "seconds": round(time.perf_counter() - started, 1)}
    write_result(args.out, result, markdown(result) + "\n", indent=1)
    print(markdown(result))


def markdown(result: dict) -> str:
    labels = [e["rule"] for e in result["rows"][0]["extracted"]]
    header = ["task", "expert acc %", "LoRA expert r8 %", *(f"extracted {label} %" for label in labels)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in result["rows"]:
        lines.append("| " + " | ".join([r["task"], f"{r['expert'] * 100:.1f}", f"{r['lora_expert_rank8'] * 100:.1f}",
                                        *(f"{e['accuracy'] * 100:.1f}" for e in r["extracted"])]) + " |")
    lines.append("| average, % of the expert | 100.0 | " + f"{result['lora_expert_rank8_normalized'] * 100:.1f} | "
                 + " | ".join(f"{result['average_normalized'][label] * 100:.1f}" for label in labels) + " |")
    sizes = {e["rule"]: e["adapter_mib"] for e in result["rows"][0]["extracted"]}
    return "\n".join(lines) + "\n\nAdapter size (MiB): " + ", ".join(f"{k}: {v}" for k, v in sizes.items())


if __name__ == "__main__":
    main()
