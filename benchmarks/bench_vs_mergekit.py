"""Speed and peak memory of taskfuse vs mergekit on the same checkpoints and the same mergekit YAML.

    python benchmarks/bench_vs_mergekit.py                 # ~1.1B-parameter Llama (TinyLlama shape), bf16
    python benchmarks/bench_vs_mergekit.py --layers 4 --hidden 1024 --intermediate 2816   # a quick run

Builds a random Llama base and two perturbed fine-tunes (bf16, sharded safetensors), sets up mergekit in its own
virtual environment (benchmarks/.mergekit-venv; none of its code is used by taskfuse), then runs each method with
both tools as separate processes, alternating, --repeat times, and reports the median wall time, the largest peak RSS (ru_maxrss of the merge process) and the ratios,
with the I/O floor: taskfuse copying one model, which reads and writes the same bytes without arithmetic.
Before every run the inputs are read once, untimed, and the page cache is flushed to disk (sync): every run starts
from cached inputs and no run pays for the previous one's writes. (The benchmark machine reclaims idle page cache
at about 50 MB/s, so without this a run's inputs were partly re-read from disk, by chance and for either tool.)
Outputs are deleted after each method is compared, so earlier outputs do not crowd the page cache.

Targets (issue 2): taskfuse >= 5x faster on ties, dare_ties, slerp; >= 2x on linear, task_arithmetic; lower RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from taskfuse.bench.provenance import code_commit, command_line, machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MERGEKIT_VENV = HERE / ".mergekit-venv"
MERGEKIT_VERSION = "0.1.5"
# Every mergekit 0.1.5 method taskfuse implements (passthrough copies; the I/O floor below measures that)
METHODS = ["linear", "task_arithmetic", "ties", "dare_ties", "slerp", "dare_linear", "breadcrumbs", "breadcrumbs_ties",
           "della", "della_linear", "model_stock", "karcher", "sce", "nuslerp", "multislerp", "ram", "ramplus_tl",
           "nearswap", "arcee_fusion"]
RANDOM = {"dare_ties", "dare_linear", "della", "della_linear"}  # masks drawn differently: no difference reported
# Runs one command and prints its wall time and peak RSS; a fresh wrapper per run keeps RUSAGE_CHILDREN per run.
MEASURE = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
           "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True); "
           "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, r.returncode); "
           "sys.stderr.write(r.stderr[-2000:] if r.returncode else '')")


def llama_shapes(layers: int, hidden: int, inter: int, vocab: int, kv_heads: int, heads: int) -> dict:
    head = hidden // heads
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,),
              "lm_head.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (hidden, hidden), p + "self_attn.k_proj.weight": (kv_heads * head, hidden),
            p + "self_attn.v_proj.weight": (kv_heads * head, hidden), p + "self_attn.o_proj.weight": (hidden, hidden),
            p + "mlp.gate_proj.weight": (inter, hidden), p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter), p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,)})
    return shapes


def write_checkpoint(path: Path, shapes: dict, seed: int, base_seed: int, config: dict, shard_bytes: int) -> None:
    """Base tensors from `base_seed`; a fine-tune (seed != base_seed) adds seeded noise of 1% scale."""
    path.mkdir(parents=True, exist_ok=True)
    shards, current, size, weight_map = [], {}, 0, {}
    g_base, g_tune = torch.Generator().manual_seed(base_seed), torch.Generator().manual_seed(seed)
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=g_base) * 0.02
        if seed != base_seed:
            t += torch.randn(shape, generator=g_tune) * 0.0002
        current[name] = t.to(torch.bfloat16)
        size += current[name].numel() * 2
        if size >= shard_bytes:
            shards.append(current)
            current, size = {}, 0
    shards += [current] if current else []
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, path / fname, metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
    total = sum(t.numel() * 2 for s in shards for t in s.values())
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                   "weight_map": weight_map}))
    (path / "config.json").write_text(json.dumps(config))


def build_models(work: Path, args) -> list[Path]:
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=32, num_key_value_heads=4,
                         tie_word_embeddings=False, dtype="bfloat16").to_dict()
    config["architectures"] = ["LlamaForCausalLM"]  # as save_pretrained writes it; mergekit requires it
    shapes = llama_shapes(args.layers, args.hidden, args.intermediate, args.vocab, 4, 32)
    params = sum(torch.Size(s).numel() for s in shapes.values())
    print(f"model: {params / 1e9:.2f}B parameters, bf16, {args.layers} layers")
    paths = [work / "models" / n for n in ("base", "ft0", "ft1")]
    for seed, path in zip((0, 1, 2), paths):
        if not (path / "model.safetensors.index.json").exists():
            write_checkpoint(path, shapes, seed, 0, config, 2_000_000_000)
    return paths


def ensure_reference_venv(venv: Path, requirement: str, marker: str) -> Path:
    """A virtual environment at `venv` holding a reference implementation (`requirement`), created unless its
    `marker` file (relative to the venv) exists; returns the marker's path. None of its code enters taskfuse."""
    if not (venv / marker).exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["torch==2.13.0"], check=True)  # the CPU wheel; an open range would pull CUDA
        subprocess.run(pip + [requirement], check=True)
    return venv / marker


def ensure_mergekit() -> Path:
    return ensure_reference_venv(MERGEKIT_VENV, f"mergekit=={MERGEKIT_VERSION}", "bin/mergekit-yaml")


def mergekit_config(method: str, base: Path, tunes: list[Path]) -> dict:
    models = [{"model": str(t), "parameters": {"weight": 0.5, "density": 0.5}} for t in tunes]
    weighted = [{"model": str(t), "parameters": {"weight": 0.5}} for t in tunes]
    plain = [{"model": str(t)} for t in tunes]
    if method in ("linear", "karcher", "nuslerp", "multislerp"):  # the fine-tunes' weights, no base
        return {"merge_method": method, "models": weighted, "dtype": "bfloat16"}
    if method in ("slerp", "nearswap", "arcee_fusion"):  # the base and one fine-tune
        parameters = {"slerp": {"t": 0.4}, "nearswap": {"t": 0.0001}}.get(method)
        return {"merge_method": method, "base_model": str(base), "dtype": "bfloat16",
                "models": [{"model": str(base)}, {"model": str(tunes[0])}], **({"parameters": parameters}
                                                                             if parameters else {})}
    if method == "task_arithmetic":
        models = weighted
    elif method in ("model_stock", "sce", "ram", "ramplus_tl"):
        models = plain
    return {"merge_method": method, "base_model": str(base), "models": models, "dtype": "bfloat16"}


def warm(paths: list[Path]) -> None:
    """Read every input file once (untimed) so that the run starts from cached inputs, as both tools would on a
    machine that had just downloaded or used the checkpoints."""
    for path in paths:
        for f in sorted(path.glob("*.safetensors")):
            with open(f, "rb") as fh:
                while fh.readinto(WARM_BUFFER):
                    pass


WARM_BUFFER = bytearray(64 << 20)


def measure(cmd: list[str], inputs: list[Path]) -> tuple[float, int]:
    warm(inputs)
    os.sync()  # the previous run's dirty pages must not be written back on this run's time
    out = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True)
    seconds, rss, rc = out.stdout.split()
    if rc != "0":
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return float(seconds), int(rss)


def run_method(method: str, work: Path, paths: list[Path], mergekit: Path, args) -> dict:
    """`args.repeat` alternating runs of both tools; the median time and the largest peak RSS of each."""
    cfg = work / f"{method}.yaml"
    cfg.write_text(yaml.safe_dump(mergekit_config(method, paths[0], paths[1:])))
    outs = {tool: work / "out" / f"{method}-{tool}" for tool in ("mergekit", "taskfuse")}
    commands = {
        "mergekit": [str(mergekit), str(cfg), str(outs["mergekit"]), "--out-shard-size", "2B"],
        "taskfuse": [str(ROOT / ".venv" / "bin" / "taskfuse"), "merge", str(cfg), "-o", str(outs["taskfuse"])]
        + (["--threads", str(args.threads)] if args.threads else []),
    }
    runs: dict[str, list[tuple[float, int]]] = {"mergekit": [], "taskfuse": []}
    for _ in range(args.repeat):
        for tool, cmd in commands.items():
            shutil.rmtree(outs[tool], ignore_errors=True)
            runs[tool].append(measure(cmd, paths))
    mk_s, tf_s = (statistics.median(t for t, _ in runs[tool]) for tool in ("mergekit", "taskfuse"))
    mk_rss, tf_rss = (max(r for _, r in runs[tool]) for tool in ("mergekit", "taskfuse"))
    diff = max_abs_diff(outs["mergekit"], outs["taskfuse"]) if method not in RANDOM else None
    for out in outs.values():
        shutil.rmtree(out, ignore_errors=True)
    return {"method": method, "mergekit_s": mk_s, "taskfuse_s": tf_s, "speedup": mk_s / tf_s,
            "mergekit_rss_mib": mk_rss / 2**20, "taskfuse_rss_mib": tf_rss / 2**20, "rss_ratio": tf_rss / mk_rss,
            "max_abs_diff": diff, "runs_s": {tool: [t for t, _ in r] for tool, r in runs.items()}}


def io_floor(work: Path, paths: list[Path], args) -> float:
    """Median time of taskfuse copying one model (passthrough): reading and writing the bytes, no arithmetic."""
    cfg = work / "copy.yaml"
    cfg.write_text(yaml.safe_dump({"method": "passthrough", "models": [{"path": str(paths[1])}]}))
    out = work / "out" / "copy-taskfuse"
    times = []
    for _ in range(args.repeat):
        shutil.rmtree(out, ignore_errors=True)
        times.append(measure([str(ROOT / ".venv" / "bin" / "taskfuse"), "merge", str(cfg), "-o", str(out)],
                             paths[1:2])[0])
    shutil.rmtree(out, ignore_errors=True)
    return statistics.median(times)


def max_abs_diff(a: Path, b: Path) -> float:
    sys.path.insert(0, str(ROOT / "src"))
    from taskfuse.io.checkpoint import Checkpoint

    ca, cb = Checkpoint.open(a), Checkpoint.open(b)
    return max(float((ca.read(n).float() - cb.read(n).float()).abs().max()) for n in ca.tensors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--intermediate", type=int, default=5632)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--threads", type=int, default=None, help="taskfuse --threads (default: its own)")
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs per tool; medians are reported")
    ap.add_argument("--workdir", type=Path, default=ROOT / "out" / "bench")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    code = code_commit()  # the code that runs, recorded before anything can change the checkout
    paths, mergekit = build_models(args.workdir, args), ensure_mergekit()
    floor = io_floor(args.workdir, paths, args)
    print(json.dumps({"io_floor_s": floor}))
    rows = []
    for method in args.methods:
        rows.append(run_method(method, args.workdir, paths, mergekit, args))
        print(json.dumps(rows[-1]))
    print("\n" + speed_table({"mergekit": MERGEKIT_VERSION, "rows": rows}))
    print(f"\nI/O floor: taskfuse copies one model (read + write, no arithmetic) in {floor:.1f} s")
    result = {"command": command_line(), "code": code, "machine": machine(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "args": vars(args) | {"workdir": str(args.workdir)}, "mergekit": MERGEKIT_VERSION,
              "io_floor_s": floor, "rows": rows}
    (args.workdir / "results.json").write_text(json.dumps(result, indent=2))


def speed_table(result: dict) -> str:
    """The docs' speed table (docs/performance.md), generated from a results file; a test keeps them in sync."""
    lines = [f"| method | mergekit {result['mergekit']} s | taskfuse s | speed-up | mergekit peak RSS MiB | "
             "taskfuse peak RSS MiB | RSS ratio | max abs diff |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        diff = "random" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2e}"
        lines.append(f"| {r['method']} | {r['mergekit_s']:.1f} | {r['taskfuse_s']:.1f} | {r['speedup']:.1f}x | "
                     f"{r['mergekit_rss_mib']:.0f} | {r['taskfuse_rss_mib']:.0f} | {r['rss_ratio']:.2f} | {diff} |")
    return "\n".join(lines)


def latest_rows(results: list[tuple[str, dict]]) -> list[dict]:
    """Each method's row from the last of `results` (name, result; oldest first) that measured it, in the order of
    the first, with the name of its file as "run": follow-up runs re-measure the methods a change touched."""
    latest = {row["method"]: row | {"run": name} for name, result in results for row in result["rows"]}
    return [latest[row["method"]] for row in results[0][1]["rows"]]


def latest_table(results: list[tuple[str, dict]]) -> str:
    """The docs' table of each method's latest measurement, the run it comes from named per row."""
    lines = [f"| method | mergekit {results[0][1]['mergekit']} s | taskfuse s | speed-up | taskfuse peak RSS MiB | "
             "RSS ratio | run |", "|---|---|---|---|---|---|---|"]
    for r in latest_rows(results):
        lines.append(f"| {r['method']} | {r['mergekit_s']:.1f} | {r['taskfuse_s']:.1f} | {r['speedup']:.1f}x | "
                     f"{r['taskfuse_rss_mib']:.0f} | {r['rss_ratio']:.2f} | {r['run']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
