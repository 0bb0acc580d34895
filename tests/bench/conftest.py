import pytest

from taskfuse.bench.report import write_report
from taskfuse.bench.run import run_bench
from taskfuse.zoo.build import build_zoo
from taskfuse.zoo.recipe import VARIANTS


@pytest.fixture(scope="session")
def tiny_bench(tmp_path_factory):
    """One end-to-end tiny benchmark (real MiniLM experts, every data-free method), shared by the bench tests."""
    cache = tmp_path_factory.mktemp("bench-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TASKFUSE_CACHE", str(cache))
        events = []
        result = run_bench("tiny", progress=lambda *a: events.append(a))
        report = write_report(result, tmp_path_factory.mktemp("report") / "tiny")
        yield result, report, events, cache


@pytest.fixture
def tiny_zoo(tiny_bench, monkeypatch):
    """The tiny benchmark's zoo, read from its cache."""
    monkeypatch.setenv("TASKFUSE_CACHE", str(tiny_bench[3]))
    return build_zoo(VARIANTS["tiny"])
