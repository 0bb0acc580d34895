"""Black-box search: CMA-ES and random search, a resumable log, trials on a local process pool and a real local Ray."""
import json
import os
import shutil
import subprocess

import pytest
import yaml

from taskfuse.errors import UsageError
from taskfuse.programs.search import Dimension, SearchConfig, search
from tests.cli.test_user_errors import SCRIPT

SPACE = [Dimension("weight:0", 0.0, 1.0), Dimension("scale", 0.0, 2.0)]


def counting(calls):
    def evaluate(params):  # a smooth bowl with its top at weight 0.7, scale 1.2
        calls.append(len(params))
        return [-(p["weight:0"] - 0.7) ** 2 - (p["scale"] - 1.2) ** 2 for p in params]
    return evaluate


def test_cma_beats_random_on_a_bowl_with_the_same_budget(tmp_path):
    found = {a: search(SPACE, counting([]), SearchConfig(a, budget=60, popsize=6), tmp_path / f"{a}.jsonl", {})
             for a in ("cma", "random")}
    assert found["cma"].best_score > found["random"].best_score
    assert abs(found["cma"].best["weight:0"] - 0.7) < 0.05 and abs(found["cma"].best["scale"] - 1.2) < 0.1


def test_a_killed_search_resumes_from_its_log_without_scoring_a_point_twice(tmp_path):
    config = SearchConfig("cma", budget=12, popsize=4)
    whole = search(SPACE, counting([]), config, tmp_path / "whole.jsonl", {"method": "x"})
    lines = (tmp_path / "whole.jsonl").read_text().splitlines()
    (tmp_path / "killed.jsonl").write_text("\n".join(lines[:6]) + "\n" + lines[6][:10])  # 5 scored, one cut short
    calls = []
    resumed = search(SPACE, counting(calls), config, tmp_path / "killed.jsonl", {"method": "x"})
    assert resumed.trials == whole.trials and resumed.evaluated == 7 and sum(calls) == 7
    with pytest.raises(UsageError, match="belongs to a different search"):
        search(SPACE, counting([]), config, tmp_path / "killed.jsonl", {"method": "y"})


def run_search(cache, *args):
    return subprocess.run([SCRIPT, "search", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "TASKFUSE_CACHE": str(cache)})


@pytest.mark.parametrize("pool", ["process", "ray"])
def test_search_on_the_tiny_zoo_writes_the_best_merge_with_its_trials(tiny_bench, tmp_path, pool):
    if pool == "ray" and shutil.which("ray", path=os.path.dirname(SCRIPT)) is None:
        pytest.fail("Ray is part of the search extra that scripts/setup.sh installs")
    done = run_search(tiny_bench[3], "ties", "--variant", "tiny", "--budget", "4", "--popsize", "2", "--workers", "2",
                      "--pool", pool, "-o", tmp_path / "best")
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "best" / "taskfuse_search.json").read_text())
    assert record["pool"] == {"kind": pool, "workers": 2} and len(record["trials"]) == 4
    assert record["best_validation_normalized"] == max(t["score"] for t in record["trials"])
    assert {d["name"] for d in record["space"]} == {"weight:0", "weight:1", "scale", "density"}
    spec = yaml.safe_load((tmp_path / "best" / "taskfuse_spec.yaml").read_text())
    assert [m["weight"] for m in spec["models"]] == [record["best"]["weight:0"], record["best"]["weight:1"]]
    assert spec["params"]["density"] == record["best"]["density"]
    again = run_search(tiny_bench[3], "ties", "--variant", "tiny", "--budget", "4", "--popsize", "2", "--workers", "2",
                       "--pool", pool, "-o", tmp_path / "best")  # same log: nothing to score again
    assert again.returncode == 0 and "0 run now" in again.stderr, again.stderr


def test_search_refuses_weight_space_methods_and_unknown_pools(tiny_bench, tmp_path):
    done = run_search(tiny_bench[3], "linear", "--variant", "tiny", "-o", tmp_path / "x")
    assert done.returncode == 2 and "merges weights, not task vectors" in done.stderr
    done = run_search(tiny_bench[3], "ties", "--variant", "tiny", "--pool", "slurm", "--budget", "2", "-o", tmp_path / "y")
    assert done.returncode == 2 and "unknown trial pool 'slurm'" in done.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
