"""Generate FusionBench's RegMean and Fisher merges of the reference family, for tests/methods/test_reference_statistics.py.

    python scripts/make_fusionbench_statistics_fixtures.py   # after make_fusionbench_fixtures.py (reuses its models)

Statistics are seeded stand-ins for data (Grams of random activations, long-tailed Fisher values) so that both
sides merge the same numbers; FusionBench's own merge functions run in its virtual environment (none of its code
enters taskfuse, only its outputs are stored). Writes statistics.safetensors (the stand-ins, '<kind>/<tag>/<name>')
and regmean.safetensors, fisher.safetensors (unnormalised), fisher_normalized.safetensors (FusionBench's default
scaling, with its floor placement) under tests/fixtures/fusionbench/, and records the settings in
statistics_versions.json.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_vs_mergekit import ensure_reference_venv  # noqa: E402

VENV = ROOT / "benchmarks" / ".fusionbench-venv"
VERSION = "0.2.33"
OUT = ROOT / "tests" / "fixtures" / "fusionbench"
TAGS = ("ft0", "ft1", "ft2")
OFF_DIAGONAL = 0.9
FISHER_FLOOR = 1e-6

# Runs inside FusionBench's environment: weights and statistics in, its merged weights out.
REFERENCE_RUN = """
import sys, torch
from safetensors.torch import load_file, save_file
from fusion_bench.method.regmean.regmean import merging_with_regmean_weights
from fusion_bench.method.fisher_merging.fisher_merging import merging_with_fisher_weights

inputs, stats, out, ratio, floor = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
tensors, statistics = load_file(inputs), load_file(stats)
tags = ("ft0", "ft1", "ft2")
names = sorted(k.split("/", 1)[1] for k in tensors if k.startswith("ft0/"))
params = {n: [tensors[f"{t}/{n}"] for t in tags] for n in names}
grams = [{k.split("/", 2)[2][:-len(".weight")]: v for k, v in statistics.items() if k.startswith(f"gram/{t}/")}
         for t in tags]
merged = merging_with_regmean_weights(params, grams, reduce_non_diagonal_ratio=ratio)
save_file({k: v.contiguous() for k, v in merged.items()}, f"{out}/regmean.safetensors")
fishers = [{k.split("/", 2)[2]: v for k, v in statistics.items() if k.startswith(f"fisher/{t}/")} for t in tags]
save_file(merging_with_fisher_weights(params, fishers, torch.ones(len(tags)), normalize_fisher_weight=False,
                                      minimal_fisher_weight=floor), f"{out}/fisher.safetensors")
# its default: each model's Fisher scaled by 1 / (its norm + floor), the floor added to the raw values
save_file(merging_with_fisher_weights(params, fishers, torch.ones(len(tags)), normalize_fisher_weight=True,
                                      minimal_fisher_weight=floor), f"{out}/fisher_normalized.safetensors")
"""


def stand_in_statistics(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Seeded Grams for every 2-D weight (random activations, some input features never active) and Fisher
    values for every tensor, per fine-tune."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for t in TAGS:
        for key in sorted(k for k in tensors if k.startswith(f"{t}/")):
            name, value = key.split("/", 1)[1], tensors[key]
            if value.dim() == 2 and "embed" not in name:
                x = torch.randn((3 * value.shape[1], value.shape[1]), generator=g) * torch.rand(value.shape[1], generator=g)
                out[f"gram/{t}/{name}"] = x.T @ x / x.shape[0]
            out[f"fisher/{t}/{name}"] = torch.rand(value.shape, generator=g) ** 4
    return out


def main() -> None:
    python = ensure_reference_venv(VENV, f"fusion-bench=={VERSION}", "bin/python")
    statistics = stand_in_statistics(load_file(OUT / "inputs.safetensors"))
    save_file(statistics, OUT / "statistics.safetensors")
    subprocess.run([str(python), "-c", REFERENCE_RUN, str(OUT / "inputs.safetensors"),
                    str(OUT / "statistics.safetensors"), str(OUT), str(OFF_DIAGONAL), str(FISHER_FLOOR)], check=True)
    (OUT / "statistics_versions.json").write_text(json.dumps({
        "fusion-bench": VERSION, "off_diagonal_scale": OFF_DIAGONAL, "fisher_floor": FISHER_FLOOR,
        "functions": ["fusion_bench.method.regmean.regmean.merging_with_regmean_weights",
                      "fusion_bench.method.fisher_merging.fisher_merging.merging_with_fisher_weights "
                      "(normalize_fisher_weight=False)",
                      "fusion_bench.method.fisher_merging.fisher_merging.merging_with_fisher_weights "
                      "(normalize_fisher_weight=True): fisher_normalized.safetensors"]}, indent=2) + "\n")
    print("wrote regmean.safetensors, fisher.safetensors, fisher_normalized.safetensors, statistics.safetensors")


if __name__ == "__main__":
    main()
