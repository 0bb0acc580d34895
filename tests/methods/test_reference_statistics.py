"""Reference conformance of the data-aware merges against FusionBench 0.2.33: its own RegMean and Fisher merge
functions on the same weights and statistics (scripts/make_fusionbench_statistics_fixtures.py), ours through the
public API and the streaming engine, with the statistics in the folders `taskfuse statistics` writes."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from taskfuse import merge
from taskfuse.errors import UsageError
from taskfuse.io.statistics_file import read_record, save_statistics
from taskfuse.programs.fisher_floor import NEGLIGIBLE_FLOOR, fold_floor
from taskfuse.programs.statistics import normalized_fisher
from taskfuse.testing.checkpoints import checkpoints_from_tagged

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fusionbench"
SETTINGS = json.loads((FIXTURES / "statistics_versions.json").read_text())
TAGS = ("ft0", "ft1", "ft2")


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("fb_statistics")
    paths = checkpoints_from_tagged(load_file(FIXTURES / "inputs.safetensors"), FIXTURES / "config.json", root)
    statistics = load_file(FIXTURES / "statistics.safetensors")
    folders = {}
    for kind in ("gram", "fisher"):
        for t in TAGS:
            prefix = f"{kind}/{t}/"
            folders[kind, t] = save_statistics(root / f"{kind}-{t}", {k[len(prefix):]: v for k, v in statistics.items()
                                                                      if k.startswith(prefix)}, kind, {"model": t})
    return paths, folders


@pytest.mark.parametrize("method, kind, params", [
    ("regmean", "gram", {"off_diagonal_scale": SETTINGS["off_diagonal_scale"]}),
    ("fisher", "fisher", {"floor": SETTINGS["fisher_floor"]}),
])
def test_matches_fusionbench(tmp_path, family, method, kind, params):
    paths, folders = family
    spec = {"method": method, "models": [{"path": str(paths[t]), "statistics": str(folders[kind, t])} for t in TAGS],
            "params": params, "dtype": "float32"}
    ours = load_file(merge(spec, tmp_path / method).out / "model.safetensors")
    theirs = load_file(FIXTURES / f"{method}.safetensors")
    assert ours.keys() == theirs.keys()
    inputs = load_file(FIXTURES / "inputs.safetensors")
    moved = 0
    for name, expected in theirs.items():
        # FusionBench inverts in float32, we solve in float64: agreement to float32 conditioning
        torch.testing.assert_close(ours[name], expected, rtol=1e-4, atol=2e-5 * float(expected.abs().max()),
                                   msg=f"{method} vs FusionBench: {name}")
        average = torch.stack([inputs[f"{t}/{name}"] for t in TAGS]).mean(0)
        moved += not torch.allclose(expected, average, atol=1e-6)
    assert moved > len(theirs) // 2  # the statistics changed most tensors away from the plain average


def test_fusionbench_default_fisher_merge_through_its_floor_folded_into_the_statistics(tmp_path, family):
    """FusionBench scales each model's Fisher to unit norm with its floor added before (its default); folding that
    floor into unit-norm statistics (programs/fisher_floor.py) and merging with a negligible floor reproduces it.
    Without the fold, the method's floor after scaling gives a different merge: the fixture can tell them apart."""
    paths, folders = family
    statistics = load_file(FIXTURES / "statistics.safetensors")
    floor, folded, unfolded = SETTINGS["fisher_floor"], [], []
    for t in TAGS:
        raw = {k[len(f"fisher/{t}/"):]: v for k, v in statistics.items() if k.startswith(f"fisher/{t}/")}
        unit, norm = normalized_fisher(raw)
        unfolded.append(save_statistics(tmp_path / f"unit-{t}", unit, "fisher",
                                        {"model": t, "normalized": True, "fisher_norm": norm}))
        folded.append(fold_floor(unfolded[-1], floor, tmp_path / f"folded-{t}"))
        assert read_record(folded[-1])["floor_before_scaling"] == floor
    theirs = load_file(FIXTURES / "fisher_normalized.safetensors")
    merged = {}
    for name, stats, merge_floor in (("folded", folded, NEGLIGIBLE_FLOOR), ("after", unfolded, floor)):
        spec = {"method": "fisher", "models": [{"path": str(paths[t]), "statistics": str(f)}
                                               for t, f in zip(TAGS, stats)],
                "params": {"floor": merge_floor}, "dtype": "float32"}
        merged[name] = load_file(merge(spec, tmp_path / name).out / "model.safetensors")
    assert merged["folded"].keys() == theirs.keys()
    for name, expected in theirs.items():
        torch.testing.assert_close(merged["folded"][name], expected, rtol=1e-5, atol=1e-6,
                                   msg=f"fisher with FusionBench's floor placement: {name}")
    assert any(not torch.allclose(merged["after"][n], theirs[n], rtol=1e-5, atol=1e-6) for n in theirs)
    with pytest.raises(UsageError, match="already folded"):
        fold_floor(folded[0], floor, tmp_path / "twice")
    with pytest.raises(UsageError, match="gram, not fisher"):
        fold_floor(folders["gram", "ft0"], floor, tmp_path / "gram")
    with pytest.raises(UsageError, match="no norm"):
        fold_floor(folders["fisher", "ft0"], floor, tmp_path / "no-norm")
    assert not any((tmp_path / n).exists() for n in ("twice", "gram", "no-norm"))
