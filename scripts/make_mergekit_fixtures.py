"""Generate reference outputs from mergekit for the reference-conformance tests.

    python scripts/make_mergekit_fixtures.py          # uses benchmarks/.mergekit-venv, creating it if needed

Builds three tiny float32 Llama checkpoints (base + 2 fine-tunes) with taskfuse's test helpers, runs mergekit-yaml
(in its own virtual environment; none of its code enters taskfuse) for each deterministic method both tools
implement, and stores inputs, configs and outputs as one safetensors file per method under
tests/fixtures/mergekit/, plus versions.json recording the mergekit and torch versions used.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_vs_mergekit import MERGEKIT_VENV, MERGEKIT_VERSION, ensure_mergekit  # noqa: E402

from taskfuse.io.checkpoint import Checkpoint  # noqa: E402
from taskfuse.testing.checkpoints import build_family, tagged_tensors  # noqa: E402

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
}


def mergekit_yaml(method: str, spec: dict, base: Path, tunes: list[Path]) -> dict:
    cfg: dict = {"merge_method": method, "dtype": "float32"}
    if spec.get("slerp"):
        cfg.update(base_model=str(base), parameters=spec["parameters"],
                   models=[{"model": str(base)}, {"model": str(tunes[0])}])
        return cfg
    cfg["models"] = [{"model": str(t), **m} for t, m in zip(tunes, spec["models"])]
    if spec.get("base"):
        cfg["base_model"] = str(base)
    return cfg


def main() -> None:
    exe = ensure_mergekit()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        base, tunes = build_family(Path(tmp) / "models", "llama", 2, torch.float32)
        save_file(tagged_tensors(dict(zip(("base", "ft0", "ft1"), [base, *tunes]))), OUT / "inputs.safetensors")
        (OUT / "config.json").write_text((base / "config.json").read_text())
        for method, spec in CONFIGS.items():
            cfg = mergekit_yaml(method, spec, base, tunes)
            out = Path(tmp) / f"out-{method}"
            cfg_path = Path(tmp) / f"{method}.yaml"
            cfg_path.write_text(yaml.safe_dump(cfg))
            subprocess.run([str(exe), str(cfg_path), str(out)], check=True, capture_output=True)
            ck = Checkpoint.open(out)
            save_file({n: ck.read(n) for n in ck.tensors}, OUT / f"{method}.safetensors")
            portable = json.loads(json.dumps(cfg).replace(str(base), "@base").replace(str(tunes[0]), "@ft0")
                                  .replace(str(tunes[1]), "@ft1"))
            (OUT / f"{method}.yaml").write_text(yaml.safe_dump(portable))
            print("wrote", method)
    py = str(MERGEKIT_VENV / "bin" / "python")
    torch_v = subprocess.run([py, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    (OUT / "versions.json").write_text(json.dumps({"mergekit": MERGEKIT_VERSION, "torch": torch_v.stdout.strip()},
                                                  indent=2) + "\n")


if __name__ == "__main__":
    main()
