"""Generate reference outputs from mergekit for the reference-conformance tests.

    python scripts/make_mergekit_fixtures.py          # uses benchmarks/.mergekit-venv, creating it if needed
    python scripts/make_mergekit_fixtures.py --only slerp_three_slices   # one fixture, on the committed inputs

Builds three tiny float32 Llama checkpoints (base + 2 fine-tunes) with taskfuse's test helpers, runs mergekit-yaml
(in its own virtual environment; none of its code enters taskfuse) for each deterministic method both tools
implement, and stores inputs, configs and outputs as one safetensors file per method under
tests/fixtures/mergekit/, plus versions.json recording the mergekit and torch versions used. mergekit-moe's configs
go to tests/fixtures/mergekit/moe/, each output without its routers (mergekit's and taskfuse's initialisations
differ by design), in the naming of the transformers that mergekit ran with.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_vs_mergekit import MERGEKIT_VENV, MERGEKIT_VERSION, ensure_mergekit  # noqa: E402

from taskfuse.io.checkpoint import Checkpoint  # noqa: E402
from taskfuse.testing.checkpoints import build_family, checkpoints_from_tagged, tagged_tensors  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "mergekit"
W = [{"weight": 1.0, "density": 0.4}, {"weight": 0.5, "density": 0.6}]
CONFIGS = {
    "linear": {"models": [{"parameters": {"weight": 1.0}}, {"parameters": {"weight": 0.5}}]},
    "task_arithmetic": {"base": True, "models": [{"parameters": {"weight": 1.0}}, {"parameters": {"weight": 0.5}}]},
    "ties": {"base": True, "models": [{"parameters": W[0]}, {"parameters": W[1]}]},
    "breadcrumbs": {"base": True, "models": [{"parameters": {**W[0], "gamma": 0.05}},
                                             {"parameters": {**W[1], "gamma": 0.05}}]},
    "breadcrumbs_ties": {"base": True, "models": [{"parameters": {**W[0], "gamma": 0.05}},
                                                  {"parameters": {**W[1], "gamma": 0.05}}]},
    "slerp": {"slerp": True, "parameters": {"t": [0.2, 0.7]}},
    "model_stock": {"base": True, "models": [{}, {}]},
    "karcher": {"models": [{"parameters": {"weight": 1.0}}, {"parameters": {"weight": 0.5}}]},
    # mergekit takes the first rule that matches a tensor and never reaches rules after a catch-all
    "slerp_first_match": {"method": "slerp", "slerp": True,
                          "parameters": {"t": [{"filter": "self_attn.q_proj", "value": 0.9},
                                               {"filter": "self_attn", "value": 0.1}, {"value": 0.5},
                                               {"filter": "mlp", "value": 0.0}]}},
    # the config's weight is every model's that gives none
    "task_arithmetic_shared_weight": {"method": "task_arithmetic", "base": True, "parameters": {"weight": 0.3},
                                      "models": [{"parameters": {"weight": 1.0}}, {}]},
    # SCE with half the entries selected by variance; mergekit ignores the weights
    "sce": {"base": True, "parameters": {"select_topk": 0.5}, "models": [{"parameters": {"weight": 0.7}}, {}]},
    # NuSLERP by the models' weights: whole tensors, rows, and with a base (task vectors) by columns
    "nuslerp": {"models": [{"parameters": {"weight": 1.0}}, {"parameters": {"weight": 0.6}}]},
    "nuslerp_rows": {"method": "nuslerp", "parameters": {"nuslerp_flatten": False},
                     "models": [{"parameters": {"weight": 0.3}}, {"parameters": {"weight": 0.9}}]},
    "nuslerp_task_vectors_columns": {"method": "nuslerp", "base": True,
                                     "parameters": {"nuslerp_flatten": False, "nuslerp_row_wise": True},
                                     "models": [{"parameters": {"weight": 0.5}}, {"parameters": {"weight": 0.8}}]},
    # Multi-SLERP of the two fine-tunes, and of their task vectors with raw (unnormalised) weights
    "multislerp": {"models": [{"parameters": {"weight": 1.0}}, {"parameters": {"weight": 0.6}}]},
    "multislerp_task_vectors": {"method": "multislerp", "base": True, "parameters": {"normalize_weights": False},
                                "models": [{"parameters": {"weight": 0.7}}, {"parameters": {"weight": 0.4}}]},
    # Multi-SLERP of three models: the base and both fine-tunes
    "multislerp_three": {"method": "multislerp", "base_among_models": True,
                         "models": [{"parameters": {"weight": 0.2}}, {"parameters": {"weight": 0.5}},
                                    {"parameters": {"weight": 0.3}}]},
    # RAM and RAM+ (tensor-local) with a threshold that leaves entries changed by one model, by both, and by none
    "ram": {"base": True, "parameters": {"epsilon": 0.02}, "models": [{}, {}]},
    "ramplus_tl": {"base": True, "parameters": {"epsilon": 0.02, "r": 0.5, "alpha": 0.8}, "models": [{}, {}]},
    # NearSwap of the base toward the first fine-tune, where entries differ by less than 0.01 (the base is listed
    # among the models, as mergekit's docs show it)
    "nearswap": {"base": True, "base_among_models": True, "parameters": {"t": 0.01},
                 "models": [{}, {}]},
    # Arcee Fusion of the first fine-tune into the base (the base listed among the models, as for nearswap)
    "arcee_fusion": {"base": True, "base_among_models": True, "models": [{}, {}]},
    # mergekit's README's TIES example on two fine-tunes: weights per layer (a gradient) and per tensor (filters)
    "ties_weights_per_layer_and_filter": {
        "method": "ties", "base": True, "parameters": {"normalize": True, "int8_mask": True},
        "models": [{"parameters": {"density": [1, 0.7, 0.1], "weight": [0, 0.3, 0.7, 1]}},
                   {"parameters": {"density": 0.5, "weight": [{"filter": "mlp", "value": 0.5},
                                                              {"filter": "self_attn.q", "value": -0.2},
                                                              {"value": 0.3}]}}]},
    # a model's filtered weight that matches no rule falls back to the config's (filtered) weight
    "task_arithmetic_filtered_weights": {
        "method": "task_arithmetic", "base": True,
        "parameters": {"weight": [{"filter": "mlp", "value": 0.2}, {"value": 0.6}]},
        "models": [{"parameters": {"weight": [{"filter": "self_attn", "value": 1.0}]}}, {}]},
}
# Slices that merge several models, each source with the same layers (spec/mergekit_slices.py); the tiny models have
# three layers. Gradients are evaluated along each slice; a one-layer slice sits at its end.
ATTN_MLP_T = [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
              {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]}]
SLICED = {
    # the widely copied SLERP recipe: one slice over every layer, filtered gradients
    "slerp_one_slice": {"merge_method": "slerp", "ranges": [(0, 3)],
                        "parameters": {"t": [*ATTN_MLP_T, {"value": 0.5}]}},
    # the config's gradient runs again along each slice
    "slerp_two_slices": {"merge_method": "slerp", "ranges": [(0, 2), (2, 3)],
                         "parameters": {"t": [*ATTN_MLP_T, {"value": [0.2, 0.6]}]}},
    # a middle slice's own settings, tried before the config's (first matching rule wins)
    "slerp_three_slices": {"merge_method": "slerp", "ranges": [(0, 1), (1, 2), (2, 3)],
                           "slice_parameters": {1: {"t": [{"filter": "mlp", "value": 0.9},
                                                          {"filter": "o_proj", "value": [0.1, 0.2]}]}},
                           "parameters": {"t": [*ATTN_MLP_T, {"value": [0.2, 0.6]}]}},
    # sources' weights that change in a middle slice, a slice's λ gradient
    "ties_three_slices": {"merge_method": "ties", "ranges": [(0, 1), (1, 2), (2, 3)], "parameters": {"lambda": 1.0},
                          "source_parameters": {1: [{"weight": 0.2, "density": 0.5}, {"weight": 0.9, "density": 0.6}]},
                          "slice_parameters": {1: {"lambda": [0.5, 1.5]}}},
}
SLICED_SOURCES = [{"weight": 0.7, "density": 0.5}, {"weight": 0.4, "density": 0.6}]


# mergekit-moe configs, run on the committed inputs with the test helpers' byte-level tokenizer saved beside the base
MOE = {
    "moe_mixtral": {"gate_mode": "random", "dtype": "float32", "experts_per_token": 1,
                    "experts": [{"source_model": "@ft0", "positive_prompts": ["The cat sat on the mat."]},
                                {"source_model": "@ft1", "positive_prompts": ["SELECT name FROM users;"]}]},
}
ROUTER = ".mlp.gate.weight"  # a Mixtral router's name in transformers 5's layout


def sliced_yaml(spec: dict, base: Path, tunes: list[Path]) -> dict:
    """A mergekit config of slices over the base and the fine-tunes (SLERP: the base and the first fine-tune)."""
    models = [base, tunes[0]] if spec["merge_method"] == "slerp" else [base, *tunes]
    slices = []
    for i, (start, end) in enumerate(spec["ranges"]):
        own = spec.get("source_parameters", {}).get(i, SLICED_SOURCES)
        sources = [{"model": str(m), "layer_range": [start, end]} for m in models]
        if spec["merge_method"] != "slerp":
            for src, params in zip(sources[1:], own):
                src["parameters"] = params
        slices.append({"sources": sources, **({"parameters": spec["slice_parameters"][i]}
                                              if i in spec.get("slice_parameters", {}) else {})})
    return {"merge_method": spec["merge_method"], "base_model": str(base), "dtype": "float32",
            "parameters": spec["parameters"], "slices": slices}


def mergekit_yaml(method: str, spec: dict, base: Path, tunes: list[Path]) -> dict:
    cfg: dict = {"merge_method": spec.get("method", method), "dtype": "float32"}
    if spec.get("slerp"):
        cfg.update(base_model=str(base), parameters=spec["parameters"],
                   models=[{"model": str(base)}, {"model": str(tunes[0])}])
        return cfg
    inputs = [base, *tunes] if spec.get("base_among_models") else tunes
    cfg["models"] = [{"model": str(t), **m} for t, m in zip(inputs, spec["models"])]
    if spec.get("parameters"):
        cfg["parameters"] = spec["parameters"]
    if spec.get("base"):
        cfg["base_model"] = str(base)
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="regenerate these fixtures alone, on the committed "
                        "inputs (the others stay as they are)")
    only = parser.parse_args().only
    unknown = sorted(set(only or []) - set(CONFIGS) - set(SLICED) - set(MOE))
    if unknown:
        parser.error(f"unknown fixture(s) {unknown}; choose from {sorted(CONFIGS) + sorted(SLICED) + sorted(MOE)}")
    exe = ensure_mergekit()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if only:
            paths = checkpoints_from_tagged(load_file(OUT / "inputs.safetensors"), OUT / "config.json",
                                            Path(tmp) / "models")
            base, tunes = paths["base"], [paths["ft0"], paths["ft1"]]
        else:
            base, tunes = build_family(Path(tmp) / "models", "llama", 2, torch.float32)
            save_file(tagged_tensors(dict(zip(("base", "ft0", "ft1"), [base, *tunes]))), OUT / "inputs.safetensors")
            (OUT / "config.json").write_text((base / "config.json").read_text())
        configs = {**{m: mergekit_yaml(m, spec, base, tunes) for m, spec in CONFIGS.items()},
                   **{name: sliced_yaml(spec, base, tunes) for name, spec in SLICED.items()}}
        for method, cfg in configs.items():
            if only and method not in only:
                continue
            out = Path(tmp) / f"out-{method}"
            cfg_path = Path(tmp) / f"{method}.yaml"
            cfg_path.write_text(yaml.safe_dump(cfg))
            run = subprocess.run([str(exe), str(cfg_path), str(out)], capture_output=True, text=True)
            if run.returncode:
                sys.exit(f"mergekit failed on {method}:\n{run.stderr[-3000:]}")
            ck = Checkpoint.open(out)
            save_file({n: ck.read(n) for n in ck.tensors}, OUT / f"{method}.safetensors")
            portable = json.loads(json.dumps(cfg).replace(str(base), "@base").replace(str(tunes[0]), "@ft0")
                                  .replace(str(tunes[1]), "@ft1"))
            (OUT / f"{method}.yaml").write_text(yaml.safe_dump(portable))
            print("wrote", method)
        write_moe_fixtures(exe, base, tunes, Path(tmp), only)
    py = str(MERGEKIT_VENV / "bin" / "python")
    torch_v = subprocess.run([py, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    (OUT / "versions.json").write_text(json.dumps({"mergekit": MERGEKIT_VERSION, "torch": torch_v.stdout.strip()},
                                                  indent=2) + "\n")


def write_moe_fixtures(exe: Path, base: Path, tunes: list[Path], tmp: Path, only: list[str] | None) -> None:
    from taskfuse.testing.tiny_llm import byte_bpe_tokenizer

    byte_bpe_tokenizer().save_pretrained(base)  # mergekit-moe saves the base's tokenizer with the MoE
    (OUT / "moe").mkdir(exist_ok=True)
    tags = {"@base": str(base), "@ft0": str(tunes[0]), "@ft1": str(tunes[1])}
    for name, portable in MOE.items():
        if only and name not in only:
            continue
        text = yaml.safe_dump({"base_model": "@base", **portable})
        for tag, path in tags.items():
            text = text.replace(tag, path)
        cfg_path, out = tmp / f"{name}.yaml", tmp / f"out-{name}"
        cfg_path.write_text(text)
        run = subprocess.run([str(exe.parent / "mergekit-moe"), str(cfg_path), str(out)], capture_output=True,
                             text=True)
        if run.returncode:
            sys.exit(f"mergekit-moe failed on {name}:\n{run.stderr[-3000:]}")
        tensors = {}
        for shard in sorted(out.glob("*.safetensors")):
            tensors.update({k: v for k, v in load_file(shard).items() if not k.endswith(ROUTER)})
        save_file(tensors, OUT / "moe" / f"{name}.safetensors")
        (OUT / "moe" / f"{name}.yaml").write_text(yaml.safe_dump({"base_model": "@base", **portable}))
        print("wrote", name)


if __name__ == "__main__":
    main()
