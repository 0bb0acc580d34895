"""The LLM benchmark's learned row: aTLAS (Zhang et al. 2024, arXiv:2407.02880) over the LoRA experts' full-weight
updates, one coefficient per task and parameter tensor, learned by next-token cross-entropy on each task's training
answers (the experts' own training questions, as the MoE's router tuning reads them), then written through the
engine from the spec that replays it, so the row judges what `taskfuse merge` would write.

It starts from the bench's Iso-C merge (at the scale validation chose) rather than from the base: Iso-C's task
vector enters at 1 and each expert's at 0, as the encoder study of learning from a merge does (docs/learned.md).
That is `taskfuse learn atlas --spec ... --start ISO_C_DIR` on the benchmark's experts, with fewer steps than the
encoder benchmark's 100: a step runs every task's batch forward and backward through the whole 135M-parameter model.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

LEARNED_ROW = "atlas from iso_c (per-tensor coefficients learned on the tasks' train answers)"
# 64 questions per task (the MoE's tuning set); batch 4 per task and step; the encoder study's lr from a merge
ATLAS = {"steps": 20, "lr": 1e-2, "examples": 64, "batch_size": 4}


def atlas_row(judge, tasks, experts, out: Path, start: Path, settings: dict = ATLAS,
              progress: Callable[[int, int, float], None] | None = None) -> tuple[object, dict]:
    """The merged model aTLAS learns from the merge in `start` and a summary of how (data seen, losses, the
    coefficients' spread, seconds)."""
    from .. import api
    from ..bench.learned import learned_method
    from ..programs.learned_spec import learned_spec
    from ..programs.spec_learning import SpecLearning, learn_for_spec

    method = learned_method("atlas", settings["steps"], settings["lr"])
    spec = api.as_spec({"method": "task_arithmetic", "base": str(judge.base), "dtype": "float32",
                        "models": [{"path": experts[t.name].ref(judge.base)} for t in tasks]})
    with tempfile.TemporaryDirectory(prefix="taskfuse-llm-atlas-") as tmp:
        files = []
        for t in tasks:  # the chat-formatted question, then the answer and the end of the turn: the experts' format
            files.append(str(Path(tmp) / f"{t.name}.jsonl"))
            Path(files[-1]).write_text("".join(
                json.dumps({"prompt": judge.chat(e.prompt), "completion": t.answers[e.answer] + judge.tok.eos_token})
                + "\n" for e in t.splits["train"][:settings["examples"]]))
        how = SpecLearning(method.parameterization, method.recipe, method.init, batch_size=settings["batch_size"],
                           start=str(start))
        learned = learn_for_spec(spec, files, how, progress)
    replay = learned_spec(learned.view, str(judge.base), [str(start), *(m.path for m in spec.models)],
                          dtype="float32")
    weights = learned.view.coefficients.detach()
    names = [f"start ({start.name})", *(t.name for t in tasks)]
    summary = {"examples": settings["examples"], "batch_size": settings["batch_size"],
               "recipe": asdict(method.recipe), "learn_seconds": round(learned.seconds, 1),
               "data_seen": [{**d, "file": Path(d["file"]).stem, "split": "train"} for d in learned.data_seen],
               "losses": [round(x, 4) for x in learned.losses],
               "coefficients": {n: {"mean": round(float(w.mean()), 3), "min": round(float(w.min()), 3),
                                    "max": round(float(w.max()), 3)} for n, w in zip(names, weights)}}
    del learned  # the base and six dense task vectors: free them before the merge and the judging
    begun = time.perf_counter()
    api.merge(replay, out)
    summary["merge_seconds"] = round(time.perf_counter() - begun, 1)
    return judge.load(out), summary
