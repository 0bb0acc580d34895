"""The benchmark's experts as a user's embedding models: what `taskfuse learn --spec` does for them from nothing but
their folders and a JSONL of labelled texts per task, judged by the benchmark's own heads and test split.

The zoo's learned rows score each expert's task through fixed heads (the base's embeddings of the label prompts)
and learn through them; a user holding embedding models has no such heads. Here each task's validation split is a
user's `{"text", "label"}` JSONL whose label is the task's prompt for the class ("a text written in german"), and
the learning embeds the prompts with the merged model itself (programs/embedding_learning.py), exactly as
`taskfuse learn --spec` runs it (bench/learn_spec.py). Rows: task arithmetic and Iso-CTS at the parameters the
committed full benchmark chose on validation (the anchors, merged by `taskfuse merge`), then aTLAS, aTLAS few-shot,
Self Positioning and aTLAS from the Iso-CTS merge (`--start`), each scored from the folder it writes. Texts are cut
to the zoo's 48 tokens (`--max-tokens 48`).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from .. import api
from ..eval.encoder import MAX_TOKENS, load_encoder
from ..eval.harness import Evaluator
from ..zoo.build import build_zoo
from ..zoo.recipe import variant_named
from .committed_choice import chosen_params, row_normalized
from .learn_spec import learn_spec
from .learned import learned_method
from .learned_over_merge import scored
from .references import reference_scores

ANCHORS = ("task_arithmetic", "iso_cts")
LEARNED = ("atlas", "atlas_fewshot", "self_positioning")
OVER = ("atlas", "iso_cts")  # aTLAS from the Iso-CTS merge: the full benchmark's best row

Say = Callable[[str], None]


def run_embedding_study(variant: str, work: Path, bench_full: Path, say: Say = print,
                        steps: int | None = None) -> dict:
    """Every row on `variant`'s tasks; the anchors' parameters are those `bench_full` (a result.json) chose."""
    zoo = build_zoo(variant_named(variant))
    tasks = list(zoo.tasks)
    # the committed benchmark's rows are the full zoo's: set beside this run's only when it is the full zoo too
    zoo_row = (lambda method: row_normalized(bench_full, method)) if variant == "full" else (lambda method: None)
    test = Evaluator(zoo.tasks, {t: e.head() for t, e in zoo.experts.items()}, "test")
    experts = reference_scores(zoo, test)["expert"]
    spec = {"taskfuse": 1, "base": str(zoo.base_dir), "dtype": "float32", "seed": zoo.variant.recipe.seed,
            "models": [{"path": str(zoo.experts[t].model_dir)} for t in tasks]}
    spec_path = work / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({**spec, "method": "task_arithmetic"}))
    data = []
    for t in tasks:  # each task's validation split as a user's JSONL: its texts, each class as its prompt
        split, prompts = zoo.tasks[t].splits["validation"], zoo.tasks[t].label_prompts()
        data.append(str(work / f"{t}.jsonl"))
        Path(data[-1]).write_text("".join(json.dumps({"text": x, "label": prompts[int(y)]}) + "\n"
                                          for x, y in zip(split.texts, split.labels)))
    rows, anchors = [], {}
    for method in ANCHORS:
        params = chosen_params(bench_full, method)
        anchors[method] = work / method
        started = time.perf_counter()
        api.merge({**spec, "method": method, "params": params}, anchors[method])
        rows.append({"method": method, "kind": "data-free", "params": params,
                     "data_seen": "none (parameters chosen on validation by the committed full benchmark)",
                     "seconds": round(time.perf_counter() - started, 1),
                     "zoo_row_normalized": zoo_row(method),
                     **scored(test.score(load_encoder(anchors[method])), experts)})
        say(f"{method} {params}: {100 * rows[-1]['average']['normalized']:.2f} % normalised")
    for name, over in [*((n, None) for n in LEARNED), OVER]:
        method = learned_method(name, steps or zoo.variant.learn_steps)
        label = name if over is None else f"{name} over {over}"
        out = work / label.replace(" ", "-")
        # the texts cut where the experts' training and every score cut them (the zoo's encoding), not at the
        # base's 256 positions
        learned = learn_spec(method, spec_path, data, out, anchors.get(over), "recomputed",
                             progress=lambda done, total, loss: say(f"  {label} step {done}/{total} loss {loss:.4f}")
                             if done % 20 == 0 else None, max_tokens=MAX_TOKENS)
        rows.append({"method": label, "kind": "learned", "learning": learned["learning"],
                     "data_seen": learned["data_seen"], "losses": learned["losses"],
                     "seconds": learned["seconds"]["learn"], "memory": learned["memory"],
                     "zoo_row_normalized": zoo_row(label),
                     **scored(test.score(load_encoder(out)), experts)})
        say(f"{label}: {100 * rows[-1]['average']['normalized']:.2f} % normalised, {rows[-1]['seconds']} s")
    return {"variant": variant, "tasks": tasks, "base": str(zoo.base_dir),
            "experts": {t: str(zoo.experts[t].model_dir) for t in tasks},
            "experts_test": {t: s.accuracy for t, s in experts.items()}, "rows": rows}
