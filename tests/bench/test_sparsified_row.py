"""`taskfuse learn --sparsify` on the benchmark zoo: learned weights over DARE-dropped vectors of the real MiniLM
experts, written as a dare_linear merge that its spec replays."""
import json
import os
import subprocess

import yaml

from tests.cli.test_user_errors import SCRIPT


def test_learn_over_dare_dropped_vectors_writes_a_dare_merge_its_spec_replays(tiny_bench, tmp_path):
    env = {**os.environ, "TASKFUSE_CACHE": str(tiny_bench[3])}
    run = lambda *args: subprocess.run([SCRIPT, "learn", *map(str, args)], capture_output=True,  # noqa: E731
                                       text=True, env=env)
    done = run("adamerging_layer", "--variant", "tiny", "--steps", "2", "--sparsify", "dare_linear",
               "--sparsify-param", "density=0.5", "-o", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    learned = json.loads((tmp_path / "out" / "taskfuse_learned.json").read_text())
    assert learned["sparsify"] == {"method": "dare_linear", "params": {"density": 0.5}}
    spec = yaml.safe_load((tmp_path / "out" / "taskfuse_spec.yaml").read_text())
    assert spec["method"] == "dare_linear" and spec["params"] == {"density": 0.5} and spec["overrides"]
    again = subprocess.run([SCRIPT, "merge", tmp_path / "out" / "taskfuse_spec.yaml", "-o", tmp_path / "again"],
                           capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == \
        (tmp_path / "out" / "model.safetensors").read_bytes()
    for args, message in ((["adamerging_layer", "--sparsify", "tsv"], "is not Σ_t w_t"),
                          (["adamerging_layer", "--sparsify", "dare_linear", "--sparsify-param", "density"],
                           "give KEY=VALUE"),
                          (["adamerging_layer", "--sparsify-param", "density=0.5"], "goes with --sparsify"),
                          (["adamerging_layer", "--sparsify", "dare_linear", "--sparsify-param", "density=3"],
                           "density"),
                          (["adamerging_layer_ties", "--sparsify", "dare_linear"], "over TIES-trimmed vectors"),
                          (["atlas", "--partitions", "2", "--sparsify", "breadcrumbs"], "per partition")):
        refused = run(*args, "--variant", "tiny", "--steps", "1", "-o", tmp_path / "no")
        assert refused.returncode == 2 and message in refused.stderr and "Traceback" not in refused.stderr, \
            refused.stderr[-1500:]
        assert not (tmp_path / "no").exists()
