"""Memory while learning, judged per row in a process of its own: one batch's saved activations are measured (and
only activations: the weights autograd saves are not counted twice), the bound adds them to base and task
vectors, and the benchmark script runs every row in a fresh interpreter."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from taskfuse.bench.learned import learned_method, task_streams, zoo_view
from taskfuse.bench.learning_memory import HEADROOM, MIB, HeldPeak, measure_row, saved_activation_bytes

ROOT = Path(__file__).resolve().parents[2]


def test_saved_activations_grow_with_the_batch_and_leave_the_weights_out(tiny_zoo):
    method = learned_method("atlas")
    view = zoo_view(tiny_zoo, method)
    name, task = next(iter(task_streams(tiny_zoo, method, 0).items()))
    inputs, labels = next(task.batches())
    one = ({"ids": inputs["ids"][:1], "mask": inputs["mask"][:1]}, labels[:1])
    doubled = ({k: torch.cat([v, v]) for k, v in inputs.items()}, torch.cat([labels, labels]))
    single, batch, twice = (saved_activation_bytes(view, task, b, "cross_entropy") for b in (one, (inputs, labels),
                                                                                           doubled))
    assert 1.8 < twice / batch < 2.2  # activations scale with the batch
    weights = sum(p.numel() * p.element_size() for p in view.merged_parameters().values())
    assert 0 < single < weights / 10  # θ(Λ), which every forward saves, is not counted as an activation


def test_a_row_is_judged_against_base_task_vectors_and_its_largest_batch(tiny_zoo):
    row = measure_row(tiny_zoo, learned_method("adamerging_layer", steps=2))
    assert row["steps"] == 2 and row["activations_mib"] == max(row["activations_mib_per_task"].values())
    expected = HEADROOM * (row["base_mib"] + row["task_vectors_mib"] + row["activations_mib"])
    assert row["bound_mib"] == pytest.approx(expected, abs=0.2)
    assert row["within"] == (row["rss_added_mib"] <= row["bound_mib"])
    assert row["rss_added_mib"] >= row["loop_rss_added_mib"] - 1  # the whole learning contains its loop
    assert row["rss_added_mib"] * MIB > 0
    if HeldPeak.available():  # the loop holds the task vectors it learns over (RSS may not grow for them in a
        # process that had freed that much before: glibc reuses what it kept)
        assert row["loop_held_added_mib"] >= row["task_vectors_mib"]


@pytest.mark.skipif(not HeldPeak.available(), reason="glibc's mallinfo2 only")
def test_what_is_held_counts_a_tensor_while_it_lives_and_not_after():
    size = 64 * MIB
    with HeldPeak() as during:
        held = torch.ones(size // 4)
    with HeldPeak() as after:
        del held
    assert during.added == pytest.approx(size, rel=0.05)
    assert after.added < MIB  # freed: no longer in use, whatever RSS the allocator keeps


def test_the_benchmark_learns_each_row_in_its_own_process(tiny_bench, tmp_path):
    env = {**os.environ, "TASKFUSE_CACHE": str(tiny_bench[3]), "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "learning_memory.py"), "--variant", "tiny",
                    "--steps", "2", "--methods", "atlas", "--over-methods", "atlas",
                    "--step", "recomputed", "merged-once", "--out", str(tmp_path / "m")],
                   env=env, check=True, capture_output=True, text=True)
    result = json.loads((tmp_path / "m" / "result.json").read_text())
    rows = result["rows"]
    assert [(r["method"], r["step"]) for r in rows] == [("atlas", "recomputed"), ("atlas", "merged-once"),
                                                        ("atlas over iso_cts", "recomputed"),
                                                        ("atlas over iso_cts", "merged-once")]
    assert all(r["steps"] == 2 for r in rows)
    # the two steps learn the same coefficients, up to summation order
    assert rows[1]["loss_last_10_mean"] == pytest.approx(rows[0]["loss_last_10_mean"], rel=1e-3)
    assert rows[3]["loss_last_10_mean"] == pytest.approx(rows[2]["loss_last_10_mean"], rel=1e-3)
    # the row over the merge holds one more vector (the merge's) than the row from the base
    assert rows[2]["task_vectors_mib"] > rows[0]["task_vectors_mib"]
    assert "| atlas over iso_cts | recomputed |" in (tmp_path / "m" / "results.md").read_text()


@pytest.mark.skipif(not HeldPeak.available(), reason="glibc's mallinfo2 only")
def test_what_is_held_counts_a_mapped_file_as_it_is_read(tmp_path):
    """transformers maps the base's safetensors file: its weights are resident pages malloc never sees."""
    import numpy as np
    size = 64 * MIB
    np.ones(size // 4, dtype=np.float32).tofile(tmp_path / "weights")
    with HeldPeak() as reading:
        mapped = np.memmap(tmp_path / "weights", dtype=np.float32, mode="r")
        assert float(mapped.sum()) == size // 4
    assert reading.added == pytest.approx(size, rel=0.1)
