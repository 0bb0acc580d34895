"""The README's claims that can drift: the method table and the set-up commands."""
from pathlib import Path

from taskfuse.cli.main import methods_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_method_table_matches_registry():
    text = (ROOT / "README.md").read_text()
    start = text.index("<!-- methods-table")
    table = text[text.index("\n", start) + 1: text.index("<!-- /methods-table -->")]
    assert table == methods_markdown(), "regenerate with: taskfuse methods --markdown"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "bash .ci/run" in readme
    assert "pytest" in (ROOT / ".ci" / "run").read_text()


def test_benchmark_tables_are_the_committed_run():
    """The README's benchmark tables are generated from the committed output of `taskfuse bench`."""
    import json

    from taskfuse.bench.table import markdown, task_markdown

    result = json.loads((ROOT / "benchmarks" / "results" / "bench-full" / "result.json").read_text())
    text = (ROOT / "README.md").read_text()
    for marker, expected in (("bench-table", markdown(result)), ("task-table", task_markdown(result))):
        start = text.index(f"<!-- {marker}")
        block = text[text.index("\n", start) + 1: text.index(f"<!-- /{marker} -->")]
        assert block.strip() == expected.strip(), f"regenerate the {marker} from benchmarks/results/bench-full"
