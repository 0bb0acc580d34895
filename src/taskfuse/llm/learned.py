"""The LLM benchmark's learned row: aTLAS (Zhang et al. 2024, arXiv:2407.02880) over the LoRA experts' full-weight
updates, one coefficient per task and parameter tensor, learned by next-token cross-entropy on each task's training
answers (the experts' own training questions, as the MoE's router tuning reads them), then written through the
engine from the spec that replays it, so the row judges what `taskfuse merge` would write.

It is `taskfuse learn atlas --spec` on the benchmark's experts, with fewer steps than the encoder benchmark's 100:
a step runs every task's batch forward and backward through the whole 135M-parameter model.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

LEARNED_ROW = "atlas (per-tensor coefficients learned on the tasks' train answers)"
# 64 questions per task (the MoE's tuning set); batch 4 per task and step
ATLAS = {"steps": 20, "lr": 5e-2, "examples": 64, "batch_size": 4}


def atlas_row(judge, tasks, experts, out: Path, settings: dict = ATLAS,
              progress: Callable[[int, int, float], None] | None = None) -> tuple[object, dict]:
    """The merged model aTLAS learns and a summary of how (data seen, losses, coefficients' spread, seconds)."""
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
        how = SpecLearning(method.parameterization, method.recipe, method.init, batch_size=settings["batch_size"])
        learned = learn_for_spec(spec, files, how, progress)
    replay = learned_spec(learned.view, str(judge.base), [m.path for m in spec.models], dtype="float32")
    weights = learned.view.coefficients.detach()
    summary = {"settings": settings, "recipe": asdict(method.recipe), "learn_seconds": round(learned.seconds, 1),
               "data_seen": [{**d, "file": Path(d["file"]).stem, "split": "train"} for d in learned.data_seen],
               "losses": [round(x, 4) for x in learned.losses],
               "coefficients": {t.name: {"mean": round(float(w.mean()), 3), "min": round(float(w.min()), 3),
                                         "max": round(float(w.max()), 3)} for t, w in zip(tasks, weights)}}
    del learned  # the base and six dense task vectors: free them before the merge and the judging
    begun = time.perf_counter()
    api.merge(replay, out)
    summary["merge_seconds"] = round(time.perf_counter() - begun, 1)
    return judge.load(out), summary
