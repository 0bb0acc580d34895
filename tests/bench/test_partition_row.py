"""aTLAS×K on the benchmark zoo: `taskfuse learn --partitions` records every partition and writes a replayable
merge of the real MiniLM experts."""
import json
import os
import subprocess

import torch

from taskfuse.bench.learned import learn_on_zoo, learned_method
from taskfuse.bench.partition_row import partitioned_record, write_partitioned
from taskfuse.bench.partition_row import with_partitions
from taskfuse.io.checkpoint import Checkpoint
from tests.cli.test_user_errors import SCRIPT


def test_a_partitioned_zoo_merge_is_the_views_and_its_record_keeps_every_partition(tiny_zoo, tmp_path):
    method = with_partitions(learned_method("atlas", steps=2, lr=0.5), 4, 1)
    result = learn_on_zoo(tiny_zoo, method)
    record = partitioned_record(tiny_zoo, method, result)
    assert record["params"]["partitions"] == 4 and record["learning"]["parameterization"]["kind"] == "partition"
    assert set(record["partition_coefficients"]) == set(result.view.names)
    spec, _ = write_partitioned(tiny_zoo, result, tmp_path / "merged")
    assert spec["method"] == "partitioned_task_arithmetic" and len(spec["overrides"]) == len(result.view.names)
    written = Checkpoint.open(tmp_path / "merged")
    with torch.no_grad():
        expected = result.view.merged_parameters()
    moved = 0
    for name in result.view.names:
        torch.testing.assert_close(written.read(name), expected[name], rtol=1e-5, atol=1e-6)
        lam = result.view.coefficients[:, result.view.names.index(name)]
        moved += int((lam.max(-1).values - lam.min(-1).values).gt(0).any())
    assert moved > 0  # two steps at a large rate have moved partitions of one tensor apart


def test_learn_with_partitions_on_the_zoo_writes_a_merge_its_spec_replays(tiny_bench, tmp_path):
    env = {**os.environ, "TASKFUSE_CACHE": str(tiny_bench[3])}
    done = subprocess.run([SCRIPT, "learn", "atlas", "--variant", "tiny", "--steps", "2", "--partitions", "3",
                           "-o", tmp_path / "out"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    learned = json.loads((tmp_path / "out" / "taskfuse_learned.json").read_text())
    assert all(len(row) == 3 for per_model in learned["partition_coefficients"].values()
               for row in per_model.values())
    assert (tmp_path / "out" / "coefficients.png").read_bytes()[:4] == b"\x89PNG"
    again = subprocess.run([SCRIPT, "merge", tmp_path / "out" / "taskfuse_spec.yaml", "-o", tmp_path / "again"],
                           capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == \
        (tmp_path / "out" / "model.safetensors").read_bytes()
    refused = subprocess.run([SCRIPT, "learn", "self_positioning", "--variant", "tiny", "--partitions", "2",
                              "-o", tmp_path / "no"], capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "cannot learn per partition" in refused.stderr
    assert not (tmp_path / "no").exists()
