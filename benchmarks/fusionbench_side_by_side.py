"""taskfuse and FusionBench 0.2.33 side by side on the benchmark's own experts: accuracy, wall time, peak memory.

    python benchmarks/fusionbench_side_by_side.py [--variant full] [--out benchmarks/results/fusionbench-side-by-side]

For each method both tools merge the zoo's eight MiniLM experts (after `taskfuse zoo`, from the cache), each in a
fresh process so that its peak RSS is its own, and the merges are scored by the same evaluator on the test split
(normalised by each task's expert). FusionBench runs in its own virtual environment (benchmarks/.fusionbench-venv,
made on first use) through its own classes and functions: TaskArithmeticAlgorithm, TiesMergingAlgorithm,
regmean_merging, fisher_merging and LayerWiseMergedModel with its entropy_loss. What this script supplies is the
glue FusionBench leaves to its users for a new model family: the encoders loaded with transformers, a classifier
module (mean pooling, L2 normalisation, the expert's frozen head) and the validation batches in the shape its
trainer-based functions read. None of FusionBench's code enters taskfuse.

Settings, the same on both sides where the method has them: λ = 0.3 (task arithmetic, TIES), TIES keeps 20 % of
each task vector over the whole model and sums the agreeing entries, RegMean α = 0.9, Fisher floor 1e-6 placed as
FusionBench places it, on the raw Fisher before each model's is scaled to unit norm (taskfuse folds it into the
statistics, programs/fisher_floor.py, `taskfuse statistics --floor-before-scaling`; the fisher method's own floor,
added after scaling, is then negligible) and FusionBench's Fisher estimator (the squared gradient of Σ √p·log p per
batch of 16, the same batches); the
statistics and the AdaMerging entropy come from each task's validation split. Both sides learn layer-wise AdaMerging
with FusionBench's settings (the paper's code's): Adam, lr 1e-3, weights from 0.3, clamped to [0, 1], batches of 16,
200 steps (`--adamerging-steps`); taskfuse's benchmark row takes 100 steps at lr 1e-2 instead, to fit its 10-minute
budget, so this compares the two implementations, not the two rows. "fisher_row" is taskfuse's
benchmark row against the same FusionBench merge: both estimators (the empirical Fisher too) and floors 1e-6 to
1e-8 merged, scored on the validation split (the experts' validation scores included in its time) and the best
kept, a choice FusionBench leaves to its user.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_vs_mergekit import ensure_reference_venv  # noqa: E402

VENV = ROOT / "benchmarks" / ".fusionbench-venv"
VERSION = "0.2.33"
METHODS = ("task_arithmetic", "ties", "regmean", "fisher", "fisher_row", "adamerging_layer")
SCALE, TIES_KEEP, REGMEAN_ALPHA, FISHER_FLOOR = 0.3, 0.2, 0.9, 1e-6
ADAMERGING_STEPS, ADAMERGING_LR, ADAMERGING_INIT, BATCH = 200, 1e-3, 0.3, 16  # FusionBench's defaults

# Runs inside FusionBench's environment: argv[1] is a JSON job; prints one JSON line with its seconds and peak RSS.
FUSIONBENCH_RUN = r'''
import itertools, json, resource, sys, time
from types import SimpleNamespace
import torch
from torch import nn
from safetensors.torch import load_file, save_file
from transformers import AutoModel

job = json.loads(sys.argv[1])
torch.manual_seed(0)
data = load_file(job["data"])
tasks = job["tasks"]


class Classifier(nn.Module):
    """An expert encoder with its task's frozen head: mean pooling, L2 normalisation, scaled cosine logits."""

    def __init__(self, encoder, task):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(data[f"{task}/head.weight"].shape[1], data[f"{task}/head.weight"].shape[0])
        self.head.load_state_dict({"weight": data[f"{task}/head.weight"], "bias": data[f"{task}/head.bias"]})
        self.head.requires_grad_(False)

    def forward(self, input_ids, attention_mask, labels=None):
        return SimpleNamespace(logits=logits_of(self.encoder, self.head, input_ids, attention_mask))


def logits_of(encoder_call, head, ids, mask):
    states = encoder_call(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).to(states.dtype)
    pooled = (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    return head(nn.functional.normalize(pooled, dim=-1))


def batches(task):
    ids, mask, labels = data[f"{task}/ids"], data[f"{task}/mask"], data[f"{task}/labels"]
    return [{"input_ids": ids[i:i + job["batch"]], "attention_mask": mask[i:i + job["batch"]],
             "labels": labels[i:i + job["batch"]]} for i in range(0, len(ids), job["batch"])]


class Loader:  # what regmean_merging and fisher_merging read from a transformers Trainer
    def __init__(self, task):
        self.batches, self._train_batch_size = batches(task), job["batch"]

    def get_train_dataloader(self):
        return self.batches

    def _prepare_inputs(self, inputs):
        return inputs


started = time.perf_counter()
load = lambda path: AutoModel.from_pretrained(path).eval()
method = job["method"]
if method in ("task_arithmetic", "ties"):
    from fusion_bench.method import TaskArithmeticAlgorithm, TiesMergingAlgorithm
    pool = {"_pretrained_": load(job["base"]), **{t: load(p) for t, p in zip(tasks, job["experts"])}}
    algorithm = (TaskArithmeticAlgorithm(scaling_factor=job["scale"]) if method == "task_arithmetic" else
                 TiesMergingAlgorithm(scaling_factor=job["scale"], threshold=job["keep_percent"], remove_keys=[],
                                      merge_func="sum"))
    merged = algorithm.run(pool).state_dict()
elif method in ("regmean", "fisher"):
    from fusion_bench.method.regmean.regmean import regmean_merging
    from fusion_bench.method.fisher_merging.fisher_merging import fisher_merging
    models = [Classifier(load(p), t) for t, p in zip(tasks, job["experts"])]
    counts = [len(data[f"{t}/labels"]) for t in tasks]
    if method == "regmean":
        params = regmean_merging(models, [Loader(t) for t in tasks], ["head.*"], counts,
                                 reduce_non_diagonal_ratio=job["alpha"])
    else:
        # the pooler feeds no sentence embedding: no gradient, which fisher_merging cannot square
        params = fisher_merging(models, [Loader(t) for t in tasks], ["head.*", ".*pooler.*"], counts,
                                minimal_fisher_weight=job["floor"])
    merged = {k[len("encoder."):]: v for k, v in params.items() if k.startswith("encoder.")}
else:  # layer-wise AdaMerging
    from fusion_bench.method.adamerging.entropy_loss import entropy_loss
    from fusion_bench.models.wrappers.layer_wise_fusion import LayerWiseMergedModel, get_layer_wise_weights
    base = load(job["base"])
    module = LayerWiseMergedModel(get_layer_wise_weights(len(tasks), len(list(base.parameters())), job["init"]),
                                  base, [load(p) for p in job["experts"]], clamp_weights=True,
                                  strict=False)  # BERT's position and token-type ids are non-persistent buffers
    heads = {t: Classifier(nn.Identity(), t).head for t in tasks}
    streams = {}
    for t in tasks:
        ts = batches(t)
        order = torch.randperm(len(ts)).tolist()
        streams[t] = itertools.cycle([ts[i] for i in order])
    optimizer = torch.optim.Adam([module.merge_weight], lr=job["lr"])
    module.merge_weights()
    for step in range(job["steps"]):
        for t in tasks:
            batch = next(streams[t])
            logits = logits_of(lambda **kw: module.forward_model(args=(), kwargs=kw), heads[t],
                               batch["input_ids"], batch["attention_mask"])
            entropy_loss(logits).backward(retain_graph=True)
        optimizer.step()
        optimizer.zero_grad()
        module.merge_weights()
    merged = module.merge_and_unload().state_dict()
seconds = time.perf_counter() - started
save_file({k: v.detach().contiguous() for k, v in merged.items()}, job["out"])
print(json.dumps({"seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def ours(method: str, variant: str, out: Path, adamerging_steps: int) -> dict:
    """taskfuse's merge of the zoo with `method`, written to `out` (a child process runs this)."""
    from taskfuse import api
    from taskfuse.bench.learned import learn_on_zoo, learned_method
    from taskfuse.bench.learned_row import write_learned
    from taskfuse.bench.merging import zoo_spec
    from taskfuse.bench.statistics_rows import (FISHER_BATCH, STATISTICS_ROWS, TENSOR_RULES, gather,
                                                merge_statistics_row)
    from taskfuse.eval.harness import Evaluator
    from taskfuse.programs.fisher_floor import NEGLIGIBLE_FLOOR, fold_floor
    from taskfuse.zoo.build import build_zoo
    from taskfuse.zoo.recipe import variant_named
    zoo = build_zoo(variant_named(variant))
    started = time.perf_counter()
    if method == "task_arithmetic":
        api.merge(zoo_spec(zoo, method, {"scale": SCALE}), out)
    elif method == "ties":
        # FusionBench's TIES trims each task vector over the whole model (one magnitude cut-off per model), as the
        # paper's code does; ours trims per tensor unless told trim="model"
        api.merge(zoo_spec(zoo, method, {"density": TIES_KEEP, "scale": SCALE, "normalize": "none",
                                         "trim": "model"}), out)
    elif method in ("regmean", "fisher"):
        row = STATISTICS_ROWS[method]
        with tempfile.TemporaryDirectory() as work:
            shared = (("weighted-sum", FISHER_BATCH),) if method == "fisher" else None  # FusionBench's estimator
            sets, about = gather(zoo, row, Path(work), lambda *a: None, shared)
            folders, = sets.values()
            params = {"off_diagonal_scale": REGMEAN_ALPHA}
            if method == "fisher":  # FusionBench's floor placement: in the statistics, before the unit-norm scaling
                norms = about["fisher_norms"]["weighted-sum"]
                folders = [fold_floor(f, FISHER_FLOOR, Path(work) / f"folded-{t}", norms[t])
                           for f, t in zip(folders, zoo.experts)]
                params = {"floor": NEGLIGIBLE_FLOOR}
            api.merge({"method": method, "base": str(zoo.base_dir), "dtype": "float32", "params": params,
                       "seed": zoo.variant.recipe.seed, "tensor_rules": TENSOR_RULES,
                       "models": [{"path": str(e.model_dir), "statistics": str(f)}
                                  for e, f in zip(zoo.experts.values(), folders)]}, out)
    elif method == "fisher_row":
        validation = Evaluator(zoo.tasks, {t: e.head() for t, e in zoo.experts.items()}, "validation")
        experts = {t: validation.score_task(e.model_dir, t) for t, e in zoo.experts.items()}
        with tempfile.TemporaryDirectory() as work:
            chosen = merge_statistics_row(zoo, STATISTICS_ROWS["fisher"], Path(work), lambda *a: None, validation,
                                          experts)
            shutil.move(chosen["out"], out)
        return {"seconds": time.perf_counter() - started, "chosen": {"fisher_labels": chosen["estimator"],
                                                                     **chosen["spec"]["params"]},
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    elif method == "adamerging_layer":
        chosen = learned_method(method, adamerging_steps, ADAMERGING_LR)  # starts at 0.3, clamped, Adam, as theirs
        assert chosen.init == ADAMERGING_INIT and chosen.batch_size == BATCH, chosen
        write_learned(zoo, chosen, learn_on_zoo(zoo, chosen), out)
    return {"seconds": time.perf_counter() - started,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def fusionbench_inputs(zoo, path: Path) -> None:
    """Each task's validation batches (token ids, mask, labels, in a seeded order) and its expert's head."""
    import torch
    from safetensors.torch import save_file
    from taskfuse.bench.statistics_rows import validation_data
    tensors = {}
    for task, data in validation_data(zoo).items():
        order = torch.randperm(len(data.ids), generator=torch.Generator().manual_seed(0)).tolist()
        (_, ids, mask), = data.batches(len(order), order)  # one batch: padded to the split's longest text
        tensors.update({f"{task}/ids": ids, f"{task}/mask": mask, f"{task}/labels": data.labels[order]})
        head = zoo.experts[task].head()
        tensors.update({f"{task}/head.weight": head.weight.detach(), f"{task}/head.bias": head.bias.detach()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


def as_model_dir(zoo, weights: Path, out: Path) -> None:
    """FusionBench's merged encoder weights as a transformers directory, every parameter accounted for (the
    pooler, which no sentence embedding reads, may come from the base)."""
    from safetensors.torch import load_file
    from taskfuse.eval.encoder import load_encoder
    model = load_encoder(zoo.base_dir)
    missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    lacking = sorted(n for n, _ in model.named_parameters() if n in missing and not n.startswith("pooler."))
    if lacking or unexpected:
        raise RuntimeError(f"FusionBench's merge lacks {lacking[:3]} or has unexpected {unexpected[:3]}")
    model.save_pretrained(out)


def run_child(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="full")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--adamerging-steps", type=int, default=ADAMERGING_STEPS,
                        help="layer-wise AdaMerging's steps, on both sides")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fusionbench-side-by-side")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = [m for m in args.methods.split(",") if m not in METHODS]
    if unknown:
        parser.error(f"--methods {','.join(unknown)}: FusionBench is run here for {', '.join(METHODS)} only")
    if args.child:
        print(json.dumps(ours(args.child[0], args.variant, Path(args.child[1]), args.adamerging_steps)))
        return
    import torch
    from taskfuse.bench.provenance import code_commit, command_line, machine, write_result
    from taskfuse.eval.encoder import load_encoder
    from taskfuse.eval.harness import Evaluator, mean, normalized
    from taskfuse.io.output import check_output_dir
    from taskfuse.zoo.build import build_zoo
    from taskfuse.zoo.recipe import variant_named
    check_output_dir(args.out, "report")  # before the 40-minute run, not after it
    python = ensure_reference_venv(VENV, f"fusion-bench=={VERSION}", "bin/python")
    code = code_commit()
    zoo = build_zoo(variant_named(args.variant))
    tasks = list(zoo.experts)
    test = Evaluator(zoo.tasks, {t: e.head() for t, e in zoo.experts.items()}, "test")
    experts = {t: test.score_task(e.model_dir, t) for t, e in zoo.experts.items()}
    rows = []
    with tempfile.TemporaryDirectory(prefix="taskfuse-vs-fusionbench-") as tmp:
        work = Path(tmp)
        fusionbench_inputs(zoo, work / "inputs.safetensors")
        for method in args.methods.split(","):
            row = {"method": method}
            for side in ("taskfuse", "fusionbench"):
                print(f"{method}: {side}", file=sys.stderr, flush=True)
                out = work / f"{side}-{method}"
                if side == "taskfuse":
                    measured = run_child([sys.executable, __file__, "--variant", args.variant,
                                          "--adamerging-steps", str(args.adamerging_steps), "--child", method,
                                          str(out)])
                else:
                    job = {"method": "fisher" if method == "fisher_row" else method, "base": str(zoo.base_dir),
                           "tasks": tasks,
                           "experts": [str(zoo.experts[t].model_dir) for t in tasks],
                           "data": str(work / "inputs.safetensors"), "out": str(work / "fb.safetensors"),
                           "scale": SCALE, "keep_percent": TIES_KEEP * 100, "alpha": REGMEAN_ALPHA,
                           "floor": FISHER_FLOOR, "steps": args.adamerging_steps, "lr": ADAMERGING_LR,
                           "init": ADAMERGING_INIT,
                           "batch": BATCH}
                    measured = run_child([str(python), "-c", FUSIONBENCH_RUN, json.dumps(job)])
                    as_model_dir(zoo, work / "fb.safetensors", out)
                scores = test.score(load_encoder(out))
                norm = normalized(scores, experts)
                row[side] = {"seconds": round(measured["seconds"], 1), "peak_rss_mib": round(measured["peak_rss_mib"]),
                             "test_normalized": mean(norm.values()),
                             "test_accuracy": mean(s.accuracy for s in scores.values()),
                             "per_task_normalized": norm, **({"chosen": measured["chosen"]} if "chosen" in measured
                                                             else {})}
                shutil.rmtree(out)
            rows.append(row)
    result = {"command": command_line(), "code": code, "machine": machine(), "variant": args.variant,
              "fusionbench": VERSION, "torch": torch.__version__,
              "settings": {"scale": SCALE, "ties_keep": TIES_KEEP, "regmean_alpha": REGMEAN_ALPHA,
                           "fisher_floor": FISHER_FLOOR,
                           "fisher_floor_placement": "FusionBench's on both sides: added to the raw Fisher before "
                                                     "each model's is scaled to unit norm",
                           "adamerging": {"steps": args.adamerging_steps, "lr": ADAMERGING_LR,
                                          "init": ADAMERGING_INIT, "batch": BATCH, "sides": "both"}},
              "data": "statistics and AdaMerging entropy: each task's validation split; scores: test split",
              "rows": rows}
    write_result(args.out, result, markdown(result), indent=1)
    print(markdown(result))


def markdown(result: dict) -> str:
    lines = ["| method | taskfuse normalised % | FusionBench normalised % | taskfuse s | FusionBench s | "
             "taskfuse peak RSS MiB | FusionBench peak RSS MiB |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ours, theirs = r["taskfuse"], r["fusionbench"]
        lines.append(f"| {r['method']} | {ours['test_normalized'] * 100:.1f} | {theirs['test_normalized'] * 100:.1f} | "
                     f"{ours['seconds']} | {theirs['seconds']} | {ours['peak_rss_mib']} | {theirs['peak_rss_mib']} |")
    chosen = [f"{r['method']}: taskfuse chose {r['taskfuse']['chosen']} on validation" for r in result["rows"]
              if "chosen" in r["taskfuse"]]
    return "\n".join(lines) + "\n" + "".join(f"\n{c}\n" for c in chosen)


if __name__ == "__main__":
    main()
