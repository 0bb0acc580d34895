"""A learned method started from a data-free merge: step 0 is that merge, the learning lowers the loss from there,
and the two specs (the merge, then per-tensor weights over [merge, experts]) write the learned view."""
import pytest
import torch
from safetensors.torch import load_file

from taskfuse import api
from taskfuse.bench.learned import learned_method
from taskfuse.bench.learned_over_merge import OverMerge, check_learnable_over_merge, learn_over_merge, write_start
from taskfuse.bench.learned_row import TENSOR_RULES
from taskfuse.errors import UsageError
from taskfuse.programs.learned_spec import learned_spec


def test_atlas_over_iso_cts_starts_at_the_merge_and_its_specs_write_the_learned_view(tiny_zoo, tmp_path):
    anchor_spec, _ = write_start(tiny_zoo, OverMerge("iso_cts", {"scale": 1.5}), tmp_path / "anchor")
    assert anchor_spec["method"] == "iso_cts" and anchor_spec["params"] == {"scale": 1.5}
    method = learned_method("atlas", steps=1, lr=1e-9)  # a negligible step: the view stays the merge
    start = learn_over_merge(tiny_zoo, method, tmp_path / "anchor")
    merged = load_file(tmp_path / "anchor" / "model.safetensors")
    with torch.no_grad():
        for name, value in start.view.merged_parameters().items():
            torch.testing.assert_close(value, merged[name], rtol=0, atol=1e-5)

    result = learn_over_merge(tiny_zoo, learned_method("atlas", steps=6, lr=0.05), tmp_path / "anchor")
    assert result.losses[-1] < result.losses[0]
    weights = result.view.coefficients.detach()
    assert weights.shape[0] == 1 + len(tiny_zoo.experts) and bool((weights[1:] != 0).any())
    models = [str(tmp_path / "anchor")] + [str(e.model_dir) for e in tiny_zoo.experts.values()]
    spec = learned_spec(result.view, str(tiny_zoo.base_dir), models, dtype="float32", tensor_rules=TENSOR_RULES)
    api.merge(spec, tmp_path / "learned")
    written = load_file(tmp_path / "learned" / "model.safetensors")
    with torch.no_grad():
        for name, value in result.view.merged_parameters().items():
            torch.testing.assert_close(written[name], value, rtol=0, atol=1e-5)


def test_methods_that_cannot_start_from_a_merge_are_refused():
    for name in ("adamerging_layer_ties", "self_positioning"):
        with pytest.raises(UsageError, match="cannot start from a merge"):
            check_learnable_over_merge(learned_method(name))


def test_the_benchmark_learns_its_over_merge_rows_from_the_data_free_row_best_on_validation(tiny_bench, tmp_path):
    """The rows NAME_over_best start from the data-free row with the best validation score (chosen without test),
    record that start and the spec that writes it, and learn one coefficient per tensor for it and each expert; the
    report draws their coefficient maps with the merge as the first column and says where they started."""
    from taskfuse.bench.learned_over_merge import OVER_MERGE_ROWS
    result, report, _, _ = tiny_bench
    best = max(result["methods"], key=lambda m: max(t["validation_normalized"] for t in m["trials"]))
    rows = [r for r in result["learned"] if "over" in r["learning"]]
    assert [r["method"] for r in rows] == [f"{OVER_MERGE_ROWS[n]} over {best['method']}" for n in OVER_MERGE_ROWS]
    for row in rows:
        assert row["learning"]["over_params"] == best["params"] and row["start_spec"] == best["spec"]
        assert row["models"] == ["(merge)", *(t["name"] for t in result["tasks"])]
        assert all(len(w) == 1 + len(result["tasks"]) for w in row["coefficients"].values())
        assert len(row["losses"]) == row["params"]["steps"] and 0 <= row["average"]["accuracy"] <= 1
        assert row["params"]["start"] == f"{best['method']} {best['params']}"
        assert (report / f"coefficients_{row['method'].replace(' ', '_')}.png").exists()
    html = (report / "report.html").read_text()
    assert f"started from the {best['method']} merge" in html and "start_spec" in html
