"""New tasks from the LLM benchmark's LoRA library (bench/llm_new_task.py): each task held out in turn, the other
tasks' SmolLM2-135M experts composed for it from 5 examples per answer by LoraHub and MHR (the programs behind
`taskfuse route lorahub` and `taskfuse route mhr`), beside the base zero-shot, a LoRA trained from scratch on the
same examples, and the task's own expert. The two rows that learn weights from the examples run with three seeds
(`--seeds N`) and report the mean and each seed's average.

    python benchmarks/llm_new_task.py                                    # the six tasks, 40 test questions each
    python benchmarks/llm_new_task.py --tasks wordnet_pos fortune_language text_genre --test 10
    python benchmarks/llm_new_task.py --task-file benchmarks/tasks/wordnet_verb_topic_llm.jsonl   # the published run

A `--task-file` (prompt/answer pairs, as `taskfuse bench --llm --task-file` reads them) is held out with every
built-in task's expert as its library, and left out of the built-in tasks' average.

Writes benchmarks/results/llm-new-task/result.json and results.md (command, commit and machine recorded). Uses the
LLM benchmark's cached experts (`taskfuse bench --llm` trains them; this script does too where they are missing).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from taskfuse.bench.llm_new_task import SEEDS, run_llm_new_task
from taskfuse.llm.bench import LIMITS
from taskfuse.llm.tasks import DEFAULT_TASKS

OUT = Path(__file__).resolve().parent / "results" / "llm-new-task"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
    parser.add_argument("--hold-out", nargs="+", default=None, help="hold out only these tasks (the library is "
                        "still every other task): a shorter run, not the study")
    parser.add_argument("--task-file", action="append", default=[], help="your own .jsonl/.csv task of prompt and "
                        "answer columns, held out with every built-in expert as its library (repeatable)")
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds 0..N-1 for the rows that learn from "
                        "the examples by gradient (MHR with skills, the k-shot LoRA); their row is the mean")
    parser.add_argument("--test", type=int, default=LIMITS["test"], help="test questions per task")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    started = time.perf_counter()
    log = lambda line: print(f"[{(time.perf_counter() - started) / 60:5.1f} min] {line}", flush=True)  # noqa: E731
    result = run_llm_new_task(args.out, tuple(args.tasks), {**LIMITS, "test": args.test}, log=log,
                              held_out=tuple(args.hold_out) if args.hold_out else None,
                              task_files=tuple(args.task_file), seeds=tuple(range(args.seeds)))
    print((args.out / "results.md").read_text())
    log(f"done in {result['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
