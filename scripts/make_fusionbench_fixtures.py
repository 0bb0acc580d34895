"""Generate reference outputs from FusionBench for the reference-conformance tests of TSV-M, Iso-C, Iso-CTS, WUDI,
MagMax, KnOTS (FusionBench's subspace alignment, then its TIES on the aligned coordinates) and the TALL masks under
consensus merging.

    python scripts/make_fusionbench_fixtures.py       # uses benchmarks/.fusionbench-venv, creating it if needed

Builds a tiny float32 Llama base and three fine-tunes with taskfuse's test helpers, runs FusionBench's own merge
functions on their task vectors in FusionBench's virtual environment (none of its code enters taskfuse: it runs
in a separate interpreter, and only its outputs are stored), and writes inputs and outputs as safetensors under
tests/fixtures/fusionbench/, with versions.json recording the FusionBench and torch versions.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_vs_mergekit import ensure_reference_venv  # noqa: E402

from taskfuse.testing.checkpoints import build_family, tagged_tensors  # noqa: E402

VENV = ROOT / "benchmarks" / ".fusionbench-venv"
VERSION = "0.2.33"
OUT = ROOT / "tests" / "fixtures" / "fusionbench"
TALL_LAMBDA = 0.4
ISO_CTS_COMMON = 0.8
WUDI_STEPS = 300  # the reference code's iter_num (its default config)
KNOTS_DENSITY = 0.2  # TIES's k on the aligned coordinates (the KnOTS configs' topK 20)

# Runs inside FusionBench's environment: task vectors in, FusionBench's merged task vectors and TALL masks out.
REFERENCE_RUN = """
import sys, torch
from safetensors.torch import load_file, save_file
from fusion_bench.method.task_singular_vector.utils.TSVM_utils import compute_and_sum_svd_mem_reduction
from fusion_bench.method.isotropic_merging.iso_utils import iso_c, iso_cts
from fusion_bench.method.tall_mask.utils import generate_task_masks
from fusion_bench.method.wudi.wudi import wudi_merging
from fusion_bench.method.magmax.magmax import _magmax_select
from fusion_bench.method.knots.knots_utils import subspace_alignment
from fusion_bench.method.ties_merging.ties_merging_utils import ties_merging

inputs, out, tall_lambda, common = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
wudi_steps, knots_density = int(sys.argv[5]), float(sys.argv[6])
tensors = load_file(inputs)
names = sorted(k.split("/", 1)[1] for k in tensors if k.startswith("base/"))
tags = sorted({k.split("/", 1)[0] for k in tensors} - {"base"})
tvs = [{n: tensors[f"{t}/{n}"] - tensors[f"base/{n}"] for n in names} for t in tags]
save_file(compute_and_sum_svd_mem_reduction(tvs, accelerator="cpu"), f"{out}/tsv.safetensors")
save_file(iso_c(tvs, accelerator="cpu"), f"{out}/iso_c.safetensors")
save_file({k: v.contiguous() for k, v in iso_cts(tvs, common_space_fraction=common, accelerator="cpu").items()},
          f"{out}/iso_cts.safetensors")
masks = {}
for n in names:
    flat_tv = torch.stack([tv[n].reshape(-1) for tv in tvs])
    flat_ft = torch.stack([tensors[f"{t}/{n}"].reshape(-1) for t in tags])
    flat_ptm = tensors[f"base/{n}"].reshape(1, -1)
    masks[n] = generate_task_masks(flat_tv, flat_ft, flat_ptm, tall_mask_lambda=tall_lambda).to(torch.uint8)
save_file(masks, f"{out}/tall_masks.safetensors")
torch.manual_seed(0)
save_file({k: v.detach().contiguous() for k, v in wudi_merging(tvs, accelerator="cpu", iter_num=wudi_steps).items()},
          f"{out}/wudi.safetensors")
save_file({k: v.contiguous() for k, v in _magmax_select(tvs).items()}, f"{out}/magmax.safetensors")


def ties_keeping(flat, density):
    # FusionBench's mask keeps int(K * d) + 1 entries of d (the boundary too); TIES's count is int(density * d)
    d = flat.shape[1]
    keep = max(1, int(density * d))
    return ties_merging(flat, reset_thresh=(keep - 0.5) / d, merge_func="mean")


knots = {}
for n in names:
    deltas = [tv[n] for tv in tvs]
    if deltas[0].dim() == 2:
        u, s, vhs = subspace_alignment(deltas)
        coordinates = torch.stack([(s[:, None] * vh).reshape(-1) for vh in vhs])
        knots[n] = u @ ties_keeping(coordinates, knots_density).reshape(s.shape[0], -1)
    else:
        knots[n] = ties_keeping(torch.stack([t.reshape(-1) for t in deltas]), knots_density).reshape(deltas[0].shape)
save_file({k: v.contiguous() for k, v in knots.items()}, f"{out}/knots.safetensors")
"""


def main() -> None:
    python = ensure_reference_venv(VENV, f"fusion-bench=={VERSION}", "bin/python")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        base, tunes = build_family(Path(tmp) / "models", "llama", 3, torch.float32)
        save_file(tagged_tensors(dict(zip(("base", "ft0", "ft1", "ft2"), [base, *tunes]))), OUT / "inputs.safetensors")
        (OUT / "config.json").write_text((base / "config.json").read_text())
        subprocess.run([str(python), "-c", REFERENCE_RUN, str(OUT / "inputs.safetensors"), str(OUT),
                        str(TALL_LAMBDA), str(ISO_CTS_COMMON), str(WUDI_STEPS), str(KNOTS_DENSITY)], check=True)
    torch_v = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"], capture_output=True,
                             text=True, check=True).stdout.strip()
    (OUT / "versions.json").write_text(json.dumps({
        "fusion-bench": VERSION, "torch": torch_v, "tall_lambda": TALL_LAMBDA, "iso_cts_common_fraction": ISO_CTS_COMMON,
        "wudi_steps": WUDI_STEPS, "knots_density": KNOTS_DENSITY,
        "functions": ["fusion_bench.method.task_singular_vector.utils.TSVM_utils.compute_and_sum_svd_mem_reduction",
                      "fusion_bench.method.isotropic_merging.iso_utils.iso_c",
                      "fusion_bench.method.isotropic_merging.iso_utils.iso_cts",
                      "fusion_bench.method.tall_mask.utils.generate_task_masks",
                      "fusion_bench.method.wudi.wudi.wudi_merging",
                      "fusion_bench.method.magmax.magmax._magmax_select",
                      "fusion_bench.method.knots.knots_utils.subspace_alignment",
                      "fusion_bench.method.ties_merging.ties_merging_utils.ties_merging"]}, indent=2) + "\n")
    print("wrote", sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
