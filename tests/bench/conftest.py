import pytest

from taskfuse.bench.report import write_report
from taskfuse.bench.run import run_bench


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
