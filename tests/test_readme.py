"""The docs' claims that can drift: generated tables, the set-up commands, and results newer than their code."""
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from taskfuse.bench.table import markdown, task_markdown
from taskfuse.cli.main import methods_markdown

ROOT = Path(__file__).resolve().parents[1]
BENCH_RESULT = ROOT / "benchmarks" / "results" / "bench-full" / "result.json"
SPEED_RESULT = ROOT / "benchmarks" / "results-2026-11-22-zero-copy.json"
# Code whose change changes the benchmark's numbers: the committed result must be at least as new as its last change.
BENCH_CODE = ["src/taskfuse/methods", "src/taskfuse/ops", "src/taskfuse/plan", "src/taskfuse/execute/compute.py",
              "src/taskfuse/execute/loading.py", "src/taskfuse/zoo/recipe.py", "src/taskfuse/zoo/train.py",
              "src/taskfuse/eval", "src/taskfuse/bench/grid.py", "src/taskfuse/bench/merging.py",
              "src/taskfuse/bench/references.py"]


def block(path: Path, marker: str) -> str:
    text = path.read_text()
    start = text.index(f"<!-- {marker}")
    return text[text.index("\n", start) + 1: text.index(f"<!-- /{marker} -->")].strip()


def test_method_table_matches_registry():
    assert block(ROOT / "README.md", "methods-table") == methods_markdown().strip(), \
        "regenerate with: taskfuse methods --markdown"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "bash .ci/run" in readme
    assert "pytest" in (ROOT / ".ci" / "run").read_text()


def test_benchmark_tables_are_the_committed_run():
    """The benchmark tables are generated from the committed output of `taskfuse bench --full`."""
    result = json.loads(BENCH_RESULT.read_text())
    assert block(ROOT / "README.md", "bench-table") == markdown(result).strip()
    assert block(ROOT / "docs" / "benchmark.md", "bench-table") == markdown(result).strip()
    assert block(ROOT / "docs" / "benchmark.md", "task-table") == task_markdown(result).strip()


def test_speed_table_is_its_results_file():
    spec = importlib.util.spec_from_file_location("bench_vs_mergekit", ROOT / "benchmarks" / "bench_vs_mergekit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = json.loads(SPEED_RESULT.read_text())
    assert block(ROOT / "docs" / "performance.md", "speed-table") == module.speed_table(result)
    speedups = [r["speedup"] for r in result["rows"]]
    assert f"{min(speedups):.1f}-{max(speedups):.1f}x faster" in (ROOT / "README.md").read_text()


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_the_committed_benchmark_result_is_newer_than_the_code_under_it():
    code = json.loads(BENCH_RESULT.read_text())["code"]
    assert code["commit"] and not code["uncommitted_changes"], "rerun `taskfuse bench --full` from a clean checkout"
    last_change = git("log", "-1", "--format=%H", "--", *BENCH_CODE)
    ancestor = subprocess.run(["git", "-C", str(ROOT), "merge-base", "--is-ancestor", last_change, code["commit"]])
    assert ancestor.returncode == 0, (
        f"{git('log', '-1', '--format=%h %s', last_change)[:100]} changed code the benchmark's numbers depend on "
        f"after the committed result was made (at {code['commit'][:10]}): rerun `taskfuse bench --full` and commit "
        "its report to benchmarks/results/bench-full/")
