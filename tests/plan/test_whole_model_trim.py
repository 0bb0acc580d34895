"""Whole-model TIES trimming keeps density x (all entries) per model, not density x each tensor."""
import torch

from taskfuse import merge
from taskfuse.io.checkpoint import Checkpoint
from tests.conftest import spec_for


def test_whole_model_trim_keeps_global_top_k(tmp_path, llama_family):
    base, tunes = llama_family
    spec = spec_for("ties", base, tunes[:1], params={"density": 0.1, "trim": "model"}, dtype="float32")
    result = merge(spec, tmp_path / "o")
    threshold = result.plan.jobs[0].params["thresholds"][0]
    b, ft, out = Checkpoint.open(base), Checkpoint.open(tunes[0]), Checkpoint.open(result.out)
    kept = total = 0
    per_tensor_fractions = []
    for name in b.tensors:
        tau = ft.read(name).float() - b.read(name).float()
        merged_tau = out.read(name).float() - b.read(name).float()
        nonzero = merged_tau != 0
        kept += int(nonzero.sum())
        total += tau.numel()
        per_tensor_fractions.append(float(nonzero.float().mean()))
        assert (tau.abs()[nonzero] >= threshold - 1e-6).all()
    assert abs(kept / total - 0.1) < 0.01
    # unlike per-tensor trimming, tensors keep different fractions
    assert max(per_tensor_fractions) - min(per_tensor_fractions) > 0.05


def test_streamed_thresholds_are_exactly_the_global_kth_largest(tmp_path, llama_family):
    base, tunes = llama_family
    spec = spec_for("ties", base, tunes, params={"trim": "model"}, dtype="float32")
    for model, density in zip(spec["models"], (0.1, 0.37, 0.8)):
        model["params"] = {"density": density}
    thresholds = merge(spec, tmp_path / "o").plan.jobs[0].params["thresholds"]
    b = Checkpoint.open(base)
    for tune, density, threshold in zip(tunes, (0.1, 0.37, 0.8), thresholds):
        ft = Checkpoint.open(tune)
        flat = torch.cat([(ft.read(n).float() - b.read(n).float()).abs().reshape(-1) for n in b.tensors
                          if b.tensors[n].dtype.is_floating_point])
        k = int(density * flat.numel())
        assert threshold == float(torch.topk(flat, k).values[-1])  # exact, not approximately
