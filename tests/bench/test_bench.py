"""`taskfuse bench` on the tiny zoo: every data-free method, tuned on validation, judged on test, reported."""
import json
import math

import pytest
import torch

from taskfuse.bench.grid import EXCLUDED, GRIDS, benchmarked_methods, configs
from taskfuse.methods import all_methods, get_method
from taskfuse.bench.report import write_report
from taskfuse.errors import OutputExistsError
from taskfuse.eval.tasks import load_task
from taskfuse.io.output import MARKER
from taskfuse.zoo.recipe import VARIANTS
from tests.io.test_output import assert_untouched, foreign_folder


def test_every_registered_method_is_benchmarked_or_excluded_with_a_reason():
    """Data-free methods by the grid; methods that read statistics by the statistics rows (RegMean, Fisher)."""
    from taskfuse.bench.statistics_rows import STATISTICS_ROWS
    names = {m.name for m in all_methods()}
    assert set(benchmarked_methods()) | set(EXCLUDED) | {r.method for r in STATISTICS_ROWS.values()} == names
    assert all(reason for reason in EXCLUDED.values())


@pytest.mark.parametrize("method", sorted(GRIDS))
def test_every_grid_point_is_a_valid_parameter_set(method):
    for params in GRIDS[method]:
        get_method(method).make_params(params)


def test_the_run_covers_every_benchmarked_method_with_numbers_that_make_sense(tiny_bench):
    result, _, _, _ = tiny_bench
    assert [m["method"] for m in result["methods"]] == benchmarked_methods()
    for m in result["methods"]:
        assert set(m["test"]) == set(VARIANTS["tiny"].tasks)
        assert 0.0 <= m["average"]["accuracy"] <= 1.0
        assert not math.isnan(m["average"]["normalized"])
        assert m["spec"]["method"] == m["method"] and m["spec"]["params"] == m["params"]


def test_parameters_are_chosen_on_validation_only(tiny_bench):
    result, _, _, _ = tiny_bench
    for m in result["methods"]:
        assert [t["params"] for t in m["trials"]] == configs(m["method"], quick=True)
        best = max(t["validation_normalized"] for t in m["trials"])
        first_best = next(t for t in m["trials"] if t["validation_normalized"] == best)
        assert m["params"] == first_best["params"]
    assert "never used for selection" in result["data_used"]["reported"]


def test_experts_beat_or_match_zero_shot_on_their_own_tasks(tiny_bench):
    result, _, _, _ = tiny_bench
    refs = result["references"]["test"]
    mean = lambda scores: sum(s["accuracy"] for s in scores.values()) / len(scores)  # noqa: E731
    assert mean(refs["expert"]) >= mean(refs["zero_shot"])


def test_report_files_and_provenance(tiny_bench):
    result, report, _, _ = tiny_bench
    layer_wise = {f"coefficients_{r['method'].replace(' ', '_')}.png" for r in result["learned"]
                  if r["params"].get("coefficients") == "layer"}
    assert layer_wise  # the default learned rows include layer-wise ones
    assert {p.name for p in report.iterdir()} == {"result.json", "results.md", "report.html", "normalized_accuracy.png",
                                                  "accuracy_vs_scale.png", MARKER, *layer_wise}
    saved = json.loads((report / "result.json").read_text())
    assert saved["taskfuse"] and saved["seed"] == 0 and saved["peak_rss_mib"] > 0
    assert saved["machine"]["cpus"] >= 1 and saved["seconds"]["total"] > 0
    assert all(t["sources"] and t["classes"] for t in saved["tasks"])
    fingerprints = {t["name"]: t["fingerprint"] for t in saved["tasks"]}
    assert fingerprints == {n: load_task(n, 0, VARIANTS["tiny"].sizes).fingerprint() for n in VARIANTS["tiny"].tasks}
    assert all(f"`{f[:12]}`" in (report / "results.md").read_text() for f in fingerprints.values())
    assert (report / "normalized_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (report / "results.md").read_text()
    assert all(f"| {m} |" in table for m in benchmarked_methods())


def test_a_report_replaces_an_earlier_report_but_never_a_foreign_folder(tiny_bench, tmp_path):
    result = tiny_bench[0]
    folder = foreign_folder(tmp_path)
    with pytest.raises(OutputExistsError, match="did not write"):
        write_report(result, folder)
    assert_untouched(folder)
    out = write_report(result, tmp_path / "report")
    (out / "results.md").write_text("stale")
    write_report(result, out)
    assert (out / "results.md").read_text() != "stale"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "report"]


def test_task_vector_cosines_on_known_vectors(tmp_path):
    from safetensors.torch import save_file

    from taskfuse.bench.similarity import task_vector_cosines

    vectors = {"base": ([0.0, 0.0], [1.0]), "a": ([1.0, 0.0], [2.0]), "b": ([0.0, 3.0], [2.0]), "c": ([2.0, 0.0], [1.0])}
    for name, (w, frozen) in vectors.items():
        (tmp_path / name).mkdir()
        save_file({"w": torch.tensor(w), "frozen": torch.tensor(frozen if name == "base" else [1.0]),
                   "n": torch.tensor([1.0, 2.0]) + (0.0 if name == "base" else 1.0)}, tmp_path / name / "model.safetensors")
    stats = task_vector_cosines(tmp_path / "base", [tmp_path / n for n in "abc"])
    # per tensor: w gives cos(a,b)=0, cos(a,c)=1, cos(b,c)=0; n moves equally in every expert (cos 1); frozen: skipped
    assert stats["tensors"] == 2 and stats["pairs"] == 3
    assert stats["per_tensor_mean"]["mean"] == pytest.approx((1 / 3 + 1) / 2)
    # whole model: a=(1,0,1,1), b=(0,3,1,1), c=(2,0,1,1)
    a, b, c = (torch.tensor(v, dtype=torch.float64) for v in ([1, 0, 1, 1], [0, 3, 1, 1], [2, 0, 1, 1]))
    cos = [float(x @ y / (x.norm() * y.norm())) for x, y in ((a, b), (a, c), (b, c))]
    assert stats["whole_model"]["mean"] == pytest.approx(sum(cos) / 3)
    assert stats["whole_model"]["min"] == pytest.approx(min(cos)) and stats["whole_model"]["max"] == pytest.approx(max(cos))


def test_grid_trials_on_a_process_pool_match_the_in_process_run(tiny_bench, monkeypatch):
    """The same grid on two worker processes (one thread each) chooses the same points with the same scores, up to
    the rounding of a different thread count, and records the pool."""
    from taskfuse.bench.run import _run_methods
    from taskfuse.eval.harness import Evaluator, Score
    from taskfuse.programs.trial_pool import InProcessTrialPool, ProcessTrialPool
    from taskfuse.zoo.build import build_zoo
    result, _, events, cache = tiny_bench
    monkeypatch.setenv("TASKFUSE_CACHE", str(cache))
    zoo = build_zoo(VARIANTS["tiny"])
    heads = {t: e.head() for t, e in zoo.experts.items()}
    validation, test = Evaluator(zoo.tasks, heads, "validation"), Evaluator(zoo.tasks, heads, "test")
    refs = result["references"]
    experts = {split: {t: Score(**s) for t, s in refs[split]["expert"].items()} for split in ("validation", "test")}
    pool = ProcessTrialPool(2)
    try:
        pooled = _run_methods(zoo, ["task_arithmetic", "dare_ties"], True, validation, test, experts["validation"],
                              experts["test"], lambda *a: None, pool, ())
    finally:
        pool.close()
    here = {m["method"]: m for m in result["methods"]}
    for row in pooled:
        ours = here[row["method"]]
        assert row["params"] == ours["params"] and row["spec"] == ours["spec"]
        for a, b in zip(row["trials"], ours["trials"]):
            assert a["params"] == b["params"]
            assert a["validation_normalized"] == pytest.approx(b["validation_normalized"], abs=0.02)
        assert row["average"]["accuracy"] == pytest.approx(ours["average"]["accuracy"], abs=0.02)
    assert result["grid_trials"] == {"pool": InProcessTrialPool.kind, "workers": 1}
    grid_points = sum(len(m["trials"]) for m in result["methods"])
    assert ("search", grid_points, grid_points) in {e[:3] for e in events}  # the grid's progress reached its end
