"""Rewrite the generated tables in README.md and docs/ from the committed result files (tests keep them in sync),
and the figures drawn from a committed result after the run (the LLM new-task study's per-task bars).

    python scripts/update_docs_tables.py
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from taskfuse.bench.routing_report import markdown as routing_markdown  # noqa: E402
from taskfuse.bench.table import markdown, task_markdown  # noqa: E402
from taskfuse.cli.main import methods_markdown  # noqa: E402
from taskfuse.bench.llm_report import markdown as llm_markdown  # noqa: E402
from taskfuse.bench.weak_to_strong import table as weak_to_strong_table  # noqa: E402
from taskfuse.bench.llm_new_task import table as new_task_table  # noqa: E402
from taskfuse.bench.llm_new_task_figure import new_task_figure  # noqa: E402
from taskfuse.bench.target import markdown as targets_markdown  # noqa: E402
from taskfuse.bench.targets import all_targets  # noqa: E402

BENCH_RESULT = ROOT / "benchmarks" / "results" / "bench-full" / "result.json"
SPEED_RESULT = ROOT / "benchmarks" / "results-2026-12-06-all-methods.json"
# runs after SPEED_RESULT that re-measured the methods a change touched, oldest first
SPEED_FOLLOW_UPS = [ROOT / "benchmarks" / f"results-2026-12-06-{name}.json"
                    for name in ("nuslerp-arcee-followup", "arcee-radix", "sliced")]
ROUTING_RESULT = ROOT / "benchmarks" / "results" / "bench-routing" / "result.json"
EXTRACT_RESULT = ROOT / "benchmarks" / "results" / "extract-lora" / "result.json"
LLM_RESULT = ROOT / "benchmarks" / "results" / "bench-llm" / "result.json"
LLM_ROUTING_RESULT = ROOT / "benchmarks" / "results" / "bench-llm-routing" / "result.json"
OVER_MERGE_RESULT = ROOT / "benchmarks" / "results" / "learned-over-merge" / "result.json"
WEAK_TO_STRONG_RESULT = ROOT / "benchmarks" / "results" / "weak-to-strong" / "result.json"
NEW_TASK_RESULT = ROOT / "benchmarks" / "results" / "llm-new-task" / "result.json"
LEARNING_MEMORY_RESULT = ROOT / "benchmarks" / "results" / "learning-memory" / "result.json"
FISHER_LABELS_RESULT = ROOT / "benchmarks" / "results" / "fisher-labels" / "result.json"
SIDE_BY_SIDE_RESULT = ROOT / "benchmarks" / "results" / "fusionbench-side-by-side" / "result.json"
SEED_SPREAD_RESULT = ROOT / "benchmarks" / "results" / "learning-seed-spread" / "result.json"
PARTITIONS_RESULT = ROOT / "benchmarks" / "results" / "partitions-over-merge" / "result.json"
CLASSIFIER_RESULT = ROOT / "benchmarks" / "results" / "classifier-learning" / "result.json"
EMBEDDING_RESULT = ROOT / "benchmarks" / "results" / "embedding-learning" / "result.json"
ADDITIONS_RESULT = ROOT / "benchmarks" / "results" / "data-free-additions" / "result.json"
TAIL_AVERAGE_RESULT = ROOT / "benchmarks" / "results" / "tail-averaged-over-merge" / "result.json"
TAIL_AVERAGE_CV_RESULT = ROOT / "benchmarks" / "results" / "tail-average-cross-validated" / "result.json"


def _span(text: str, marker: str) -> tuple[int, int]:
    start = text.index("\n", text.index(f"<!-- {marker}")) + 1
    return start, text.index(f"<!-- /{marker} -->")


def replace_block(path: Path, marker: str, body: str) -> None:
    text = path.read_text()
    start, end = _span(text, marker)
    path.write_text(text[:start] + body.strip() + "\n" + text[end:])


def speed_results() -> list[tuple[str, dict]]:
    """(file name, result) of the speed run and its follow-ups, oldest first."""
    return [(path.name, json.loads(path.read_text())) for path in (SPEED_RESULT, *SPEED_FOLLOW_UPS)]


def generated_blocks() -> list[tuple[Path, str, str]]:
    """(file, marker, table) for every generated table in the docs."""
    result = json.loads(BENCH_RESULT.read_text())
    speed, speed_runs = benchmark_script("bench_vs_mergekit"), speed_results()
    return [(ROOT / "README.md", "methods-table", methods_markdown()),
            (ROOT / "README.md", "bench-table", markdown(result)),
            (ROOT / "docs" / "benchmark.md", "bench-table", markdown(result)),
            (ROOT / "docs" / "benchmark.md", "task-table", task_markdown(result)),
            (ROOT / "docs" / "performance.md", "speed-table", speed.speed_table(speed_runs[0][1])),
            (ROOT / "docs" / "performance.md", "latest-speed-table", speed.latest_table(speed_runs)),
            (ROOT / "docs" / "adapters.md", "routing-table", routing_markdown(json.loads(ROUTING_RESULT.read_text()))),
            (ROOT / "docs" / "adapters.md", "extract-table", _extraction_table()),
            (ROOT / "docs" / "llm.md", "llm-table", llm_markdown(json.loads(LLM_RESULT.read_text()))),
            (ROOT / "docs" / "llm.md", "llm-routing-table", llm_markdown(json.loads(LLM_ROUTING_RESULT.read_text()))),
            (ROOT / "README.md", "over-merge-table", _over_merge_table()),
            (ROOT / "docs" / "learned.md", "over-merge-table", _over_merge_table()),
            (ROOT / "docs" / "learned.md", "learning-memory-table", benchmark_script("learning_memory").markdown(
                json.loads(LEARNING_MEMORY_RESULT.read_text()))),
            (ROOT / "docs" / "learned.md", "seed-spread-table", benchmark_script("learning_seed_spread").markdown(
                json.loads(SEED_SPREAD_RESULT.read_text()))),
            (ROOT / "docs" / "learned.md", "partitions-table", benchmark_script("partitions_over_merge").markdown(
                json.loads(PARTITIONS_RESULT.read_text()))),
            (ROOT / "docs" / "learned.md", "tail-average-table", benchmark_script("tail_averaged_over_merge")
             .markdown(json.loads(TAIL_AVERAGE_RESULT.read_text()))),
            (ROOT / "docs" / "learned.md", "tail-average-cv-table", benchmark_script("tail_average_cross_validated")
             .markdown(json.loads(TAIL_AVERAGE_CV_RESULT.read_text()))),
            (ROOT / "docs" / "learned.md", "classifier-table", benchmark_script("classifier_learning").markdown(
                json.loads(CLASSIFIER_RESULT.read_text()))),
            (ROOT / "docs" / "learned.md", "embedding-table", benchmark_script("embedding_learning").markdown(
                json.loads(EMBEDDING_RESULT.read_text()))),
            (ROOT / "docs" / "learned.md", "fisher-labels-table", benchmark_script("fisher_labels").markdown(
                json.loads(FISHER_LABELS_RESULT.read_text()))),
            (ROOT / "docs" / "learned.md", "side-by-side-table", benchmark_script("fusionbench_side_by_side").markdown(
                json.loads(SIDE_BY_SIDE_RESULT.read_text()))),
            (ROOT / "docs" / "llm.md", "weak-to-strong-table",
             weak_to_strong_table(json.loads(WEAK_TO_STRONG_RESULT.read_text()))),
            (ROOT / "docs" / "llm.md", "new-task-table", new_task_table(json.loads(NEW_TASK_RESULT.read_text()))),
            (ROOT / "docs" / "benchmark.md", "additions-table", benchmark_script("data_free_additions").markdown(
                json.loads(ADDITIONS_RESULT.read_text()))),
            (ROOT / "README.md", "targets-table", targets_markdown(all_targets(ROOT / "benchmarks" / "results")))]


def benchmark_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _extraction_table() -> str:
    return benchmark_script("extract_lora_fidelity").markdown(json.loads(EXTRACT_RESULT.read_text()))


def _over_merge_table() -> str:
    return benchmark_script("learned_over_merge").markdown(json.loads(OVER_MERGE_RESULT.read_text()))


def current_block(path: Path, marker: str) -> str:
    text = path.read_text()
    start, end = _span(text, marker)
    return text[start:end].strip()


def main() -> None:
    for path, marker, body in generated_blocks():
        replace_block(path, marker, body)
    new_task_figure(json.loads(NEW_TASK_RESULT.read_text()), NEW_TASK_RESULT.parent / "new_task.png")


if __name__ == "__main__":
    main()
