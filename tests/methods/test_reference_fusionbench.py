"""Reference conformance against FusionBench 0.2.33: its own TSV-M, Iso-C, Iso-CTS, WUDI, MagMax, KnOTS-alignment,
TIES and TALL-mask functions run on
the same task vectors in its own virtual environment (scripts/make_fusionbench_fixtures.py; versions in
tests/fixtures/fusionbench/versions.json), taskfuse's merges through the public API on the same checkpoints."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from taskfuse import merge
from taskfuse.testing.checkpoints import checkpoints_from_tagged

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fusionbench"
VERSIONS = json.loads((FIXTURES / "versions.json").read_text())
TAGS = ("ft0", "ft1", "ft2")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    tensors = load_file(FIXTURES / "inputs.safetensors")
    return checkpoints_from_tagged(tensors, FIXTURES / "config.json", tmp_path_factory.mktemp("fb_inputs")), tensors


def merged_deltas(tmp_path, checkpoints, method, params) -> dict[str, torch.Tensor]:
    paths, tensors = checkpoints
    spec = {"method": method, "base": str(paths["base"]), "models": [{"path": str(paths[t])} for t in TAGS],
            "params": params, "dtype": "float32"}
    out = load_file(merge(spec, tmp_path / method).out / "model.safetensors")
    return {n: out[n] - tensors[f"base/{n}"] for n in out}


@pytest.mark.parametrize("method, params, fixture", [
    ("tsv", {"scale": 1.0}, "tsv"),
    ("iso_c", {"scale": 1.0}, "iso_c"),
    ("iso_cts", {"scale": 1.0, "common_fraction": VERSIONS["iso_cts_common_fraction"]}, "iso_cts"),
    ("magmax", {"scale": 1.0}, "magmax"),
])
def test_matches_fusionbench(tmp_path, checkpoints, method, params, fixture):
    ours, theirs = merged_deltas(tmp_path, checkpoints, method, params), load_file(FIXTURES / f"{fixture}.safetensors")
    assert ours.keys() == theirs.keys()
    for name, expected in theirs.items():
        # float32 SVDs on both sides, different LAPACK paths: agreement to float32 rounding of the largest entries
        torch.testing.assert_close(ours[name], expected, rtol=1e-4, atol=5e-5 * float(expected.abs().max()),
                                   msg=f"{method} vs FusionBench: {name}")


def test_wudi_matches_fusionbench(tmp_path, checkpoints):
    """FusionBench descends on the loss as written (T products a step, autograd); ours on its closed-form gradient
    (one product a step): the same Adam steps, so the same result to float32 round-off (measured: 5e-8 relative),
    where the 300 steps moved each matrix about 3e-3 from the sum it starts at."""
    ours = merged_deltas(tmp_path, checkpoints, "wudi", {"steps": VERSIONS["wudi_steps"]})
    theirs = load_file(FIXTURES / "wudi.safetensors")
    assert ours.keys() == theirs.keys()
    for name, expected in theirs.items():
        torch.testing.assert_close(ours[name], expected, rtol=1e-5, atol=1e-6, msg=f"wudi vs FusionBench: {name}")
        if expected.dim() == 2:
            assert torch.linalg.matrix_norm(ours[name] - expected) <= 1e-6 * torch.linalg.matrix_norm(expected)
            assert (expected - summed(checkpoints, name)).abs().max() > 1e-3  # the descent did move it


def test_knots_matches_fusionbench_alignment_then_ties(tmp_path, checkpoints):
    """FusionBench has KnOTS's alignment but not its merge: its alignment, then its TIES on each matrix's aligned
    coordinates (keeping TIES's count of entries), then the shared basis (the KnOTS code's svd-vector path)."""
    ours = merged_deltas(tmp_path, checkpoints, "knots", {"density": VERSIONS["knots_density"]})
    theirs = load_file(FIXTURES / "knots.safetensors")
    raw_ties = merged_deltas(tmp_path / "ties", checkpoints, "ties", {"density": VERSIONS["knots_density"]})
    assert ours.keys() == theirs.keys()
    for name, expected in theirs.items():
        torch.testing.assert_close(ours[name], expected, rtol=1e-4, atol=5e-5 * float(expected.abs().max()),
                                   msg=f"knots vs FusionBench: {name}")
        if expected.dim() == 2:  # not TIES on the raw update: the alignment changed what was trimmed
            assert (raw_ties[name] - expected).abs().max() > 0.1 * expected.abs().max()


def summed(checkpoints, name: str) -> torch.Tensor:
    _, tensors = checkpoints
    return sum(tensors[f"{t}/{name}"] - tensors[f"base/{name}"] for t in TAGS)


def test_consensus_uses_fusionbench_tall_masks(tmp_path, checkpoints):
    """FusionBench has TALL masks but no consensus merge: given its masks, consensus is task arithmetic restricted to
    the entries at least k tasks' masks keep (the paper's Eq. 5 and its consensus rule)."""
    _, tensors = checkpoints
    k, tall_lambda = 2, VERSIONS["tall_lambda"]
    ours = merged_deltas(tmp_path, checkpoints, "consensus", {"k": k, "tall_lambda": tall_lambda, "scale": 1.0})
    masks = load_file(FIXTURES / "tall_masks.safetensors")
    for name, mask in masks.items():
        deltas = torch.stack([tensors[f"{t}/{name}"] - tensors[f"base/{name}"] for t in TAGS])
        keep = mask.reshape(deltas.shape).sum(0) >= k
        torch.testing.assert_close(ours[name], deltas.sum(0) * keep, rtol=1e-6, atol=1e-7, msg=name)
        assert 0 < int(keep.sum()) < keep.numel() or deltas.abs().sum() == 0  # the masks do select something
