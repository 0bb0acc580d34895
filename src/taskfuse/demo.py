"""The built-in default job: tiny real checkpoints merged with every data-free method, each output loaded back.

Until the offline benchmark lands this is what `taskfuse demo` (the README's first command) runs.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import yaml
from rich.console import Console
from rich.table import Table

from . import api
from .io.output import claim_folder
from .methods import all_methods
from .testing.checkpoints import build_family

PROMPT = torch.tensor([[1, 5, 9, 13, 17, 21]])


def _logits(path: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(path).eval()(PROMPT).logits


def run_demo(workdir: Path, console: Console) -> list[dict]:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    workdir = Path(workdir)
    claim_folder(workdir, "demo")  # a previous demo is replaced, any other folder refused
    console.print(f"building a tiny Llama base and 3 fine-tunes in {workdir} (bf16, sharded) ...")
    base, tunes = build_family(workdir / "models", "llama", 3, torch.bfloat16, max_shard_size="150KB")
    ref = {"base": _logits(base), **{f"ft{i}": _logits(t) for i, t in enumerate(tunes)}}
    rows = []
    for info in all_methods():
        if info.statistics:  # RegMean, Fisher: they need statistics of data (`taskfuse statistics`)
            continue
        models = tunes[: info.max_models or len(tunes)]
        spec = {"method": info.name, "base": str(base), "models": [{"path": str(m)} for m in models], "seed": 0}
        if info.name in ("slerp", "karcher", "linear", "passthrough"):
            spec.pop("base")
        (workdir / "specs").mkdir(parents=True, exist_ok=True)
        spec_path = workdir / "specs" / f"{info.name}.yaml"
        spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
        result = api.merge(spec_path, workdir / "merged" / info.name, max_shard_size="200KB")
        logits = _logits(result.out)
        dist = {k: float((logits - v).abs().mean()) for k, v in ref.items()}
        rows.append({"method": info.name, "seconds": result.seconds, "files": len(result.files), **dist})
    _print(console, rows, workdir)
    return rows


def _print(console: Console, rows: list[dict], workdir: Path) -> None:
    table = Table("method", "merge s", "files", "|Δlogits| vs base", "vs ft0", "vs ft1", "vs ft2",
                  title="each merged model loaded with transformers and run on one prompt")
    for r in rows:
        table.add_row(r["method"], f"{r['seconds']:.2f}", str(r["files"]),
                      *(f"{r[k]:.4f}" for k in ("base", "ft0", "ft1", "ft2")))
    console.print(table)
    console.print(f"Specs are in {workdir / 'specs'}, merged models in {workdir / 'merged'}. Try: taskfuse plan "
                  f"{workdir / 'specs' / 'ties.yaml'} --json", soft_wrap=True)
    data_aware = [m.name for m in all_methods() if m.statistics]
    if data_aware:
        console.print(f"Not in the demo: {', '.join(data_aware)} (they merge with statistics of data; see "
                      "`taskfuse statistics`).")
