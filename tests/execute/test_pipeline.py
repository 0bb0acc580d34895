"""The read-ahead and the writer that keep the math threads busy: order, byte bounds, shards across the queue."""
import threading
import time

import pytest
from safetensors import safe_open

from taskfuse import merge
from taskfuse.execute import loading
from taskfuse.execute.loading import prefetched, stored_bytes
from taskfuse.execute.shards import jobs_in_write_order
from taskfuse.plan.planner import build_plan
from taskfuse.spec import parse_spec
from tests.conftest import spec_for


@pytest.fixture
def planned(llama_family):
    base, tunes = llama_family
    return build_plan(parse_spec(spec_for("task_arithmetic", base, tunes)), max_shard_size="100KB")


def reads_ahead(monkeypatch, plan, ckpts, ahead_bytes):
    """For each yielded job, how many jobs the reader had started by then (after a pause far longer than reading a
    tiny tensor, so every job handed to it has started); and the yielded order."""
    started, seen, names = [], [], []
    lock = threading.Lock()
    real = loading.load_job

    def counting(plan_, ckpts_, job, *args):
        with lock:
            started.append(job.name)
        return real(plan_, ckpts_, job, *args)

    monkeypatch.setattr(loading, "load_job", counting)
    jobs = jobs_in_write_order(plan)
    for loaded in prefetched(plan, ckpts, jobs, ahead_bytes=ahead_bytes):
        time.sleep(0.02)
        with lock:
            seen.append(len(started))
        names.append(loaded.job.name)
    return jobs, seen, names


def test_without_a_byte_budget_one_job_is_read_ahead(monkeypatch, planned):
    plan, ckpts = planned
    jobs, seen, names = reads_ahead(monkeypatch, plan, ckpts, 0)
    assert names == [j.name for j in jobs]
    assert seen == [min(i + 2, len(jobs)) for i in range(len(jobs))]  # the current job and the next only


def test_small_jobs_are_read_ahead_within_the_byte_budget(monkeypatch, planned):
    plan, ckpts = planned
    jobs = jobs_in_write_order(plan)
    budget = 3 * max(stored_bytes(j, ckpts) for j in jobs)
    _, seen, names = reads_ahead(monkeypatch, plan, ckpts, budget)
    assert names == [j.name for j in jobs]
    for i, count in enumerate(seen):
        ahead = jobs[i + 1:count]
        assert sum(stored_bytes(j, ckpts) for j in ahead) <= budget or len(ahead) == 1
    assert max(c - i - 1 for i, c in enumerate(seen)) >= 3  # more than one job was waiting at some point


def test_every_shard_holds_its_planned_tensors_in_order(tmp_path, planned, llama_family):
    plan, _ = planned
    assert len(plan.shards) > 2  # the writer crosses shard boundaries with outputs queued
    base, tunes = llama_family
    out = merge(spec_for("task_arithmetic", base, tunes), tmp_path / "o", max_shard_size="100KB").out
    for shard in plan.shards:
        with safe_open(out / shard, "pt") as f:
            assert list(f.keys()) == sorted(j.name for j in plan.jobs if j.shard == shard)
