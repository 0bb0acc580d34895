"""The benchmark's tasks as a user's sequence classifiers (bench/classifier_zoo.py): what `taskfuse learn --spec`
does for BERT classifiers that each keep their own head, beside `taskfuse merge`'s data-free merges of the same
classifiers.

Rows, each judged on the test split and normalised by each task's own classifier: task arithmetic, TIES and Iso-CTS
(their parameters chosen on the validation split, from the benchmark's grids); AdaMerging task- and layer-wise
(entropy on the validation texts, no labels), aTLAS (cross-entropy on the validation texts and labels), and aTLAS
from the chosen Iso-CTS merge (`--start`), each with the encoder benchmark's recipe for that row. The learned rows
run exactly what `taskfuse learn --spec` runs (bench/spec_learning_run.py) on JSONL files of the validation split,
and are scored from the folder it writes (the merged body and each classifier's own head).
"""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from .. import api
from ..eval.encoder import MAX_TOKENS, encode, load_tokenizer
from ..eval.harness import mean
from ..programs.classifier_heads import classifier_on_body, task_classifier
from ..programs.classifier_learning import CLASSIFIER_TENSOR_RULES
from ..zoo.build import build_zoo
from ..zoo.recipe import variant_named
from .classifier_zoo import accuracy, build_classifier_zoo
from .grid import configs
from .learned import learned_method
from .spec_learning_run import learn_spec_models

STATIC = ("task_arithmetic", "ties", "iso_cts")
LEARNED = ("adamerging_task", "adamerging_layer", "atlas")
OVER = ("atlas", "iso_cts")  # a learned row from the chosen data-free merge: the encoder benchmark's best row

Say = Callable[[str], None]


def run_classifier_study(variant: str, work: Path, say: Say = print, steps: int | None = None) -> dict:
    """Every row, on `variant`'s tasks; the learned rows take `steps` (default: the variant's, as the zoo's rows)."""
    zoo = build_zoo(variant_named(variant))
    classifiers = build_classifier_zoo(zoo, lambda task, done, total: say(f"training {task}: {done}/{total}")
                                       if done == total else None)
    tokenizer = load_tokenizer(classifiers.base)
    tasks = list(zoo.tasks)
    splits = {split: {t: encode(tokenizer, zoo.tasks[t].splits[split].texts, zoo.tasks[t].splits[split].labels)
                      for t in tasks} for split in ("validation", "test")}

    def scores(serve: Callable[[int, str], object], split: str) -> dict[str, float]:
        return {t: accuracy(serve(i, t), splits[split][t]) for i, t in enumerate(tasks)}

    own = {split: scores(lambda i, t: classifier_on_body(classifiers.classifiers[t], classifiers.classifiers[t]),
                         split) for split in splits}

    def judged(accuracies: dict[str, float], split: str = "test") -> dict:
        norm = {t: accuracies[t] / own[split][t] for t in tasks}
        return {"accuracy": accuracies, "normalized": norm,
                "average": {"accuracy": mean(accuracies.values()), "normalized": mean(norm.values())}}

    spec = {"taskfuse": 1, "base": str(classifiers.base), "dtype": "float32", "seed": zoo.variant.recipe.seed,
            "models": [{"path": str(classifiers.classifiers[t])} for t in tasks],
            "tensor_rules": CLASSIFIER_TENSOR_RULES}
    spec_path = work / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({**spec, "method": "task_arithmetic"}))
    data = []
    for t in tasks:  # each task's validation split as a user's JSONL: its texts and class names
        split, names = zoo.tasks[t].splits["validation"], zoo.tasks[t].label_names
        data.append(work / f"{t}.jsonl")
        data[-1].write_text("".join(json.dumps({"text": x, "label": names[int(y)]}) + "\n"
                                    for x, y in zip(split.texts, split.labels)))

    def on_merge(folder: Path) -> Callable[[int, str], object]:
        return lambda i, t: classifier_on_body(folder, classifiers.classifiers[t])

    rows, chosen_dirs = [], {}
    for method in STATIC:
        started, trials, best = time.perf_counter(), [], None
        for n, params in enumerate(configs(method, quick=variant != "full")):
            out = work / f"{method}-{n}"
            api.merge({**spec, "method": method, "params": params}, out)
            score = judged(scores(on_merge(out), "validation"), "validation")["average"]["normalized"]
            trials.append({"params": params, "validation_normalized": score})
            if best is None or score > best[0]:
                if best is not None:
                    shutil.rmtree(best[2])
                best = (score, params, out)
            else:
                shutil.rmtree(out)
        chosen_dirs[method] = best[2]
        rows.append({"method": method, "kind": "data-free", "params": best[1], "trials": trials,
                     "data_seen": "validation split: texts and labels, to choose the parameters",
                     "seconds": round(time.perf_counter() - started, 1), **judged(scores(on_merge(best[2]), "test"))})
        say(f"{method} {best[1]}: {100 * rows[-1]['average']['normalized']:.2f} % normalised")
    for name, over in [*((n, None) for n in LEARNED), OVER]:
        method = learned_method(name, steps or zoo.variant.learn_steps)
        out = work / (name if over is None else f"{name}-over-{over}")
        # the texts cut where the classifiers' training and every score cut them (the zoo's encoding)
        learned = learn_spec_models(method, spec_path, [str(d) for d in data], out, chosen_dirs.get(over), "recomputed",
                                    max_tokens=MAX_TOKENS)
        rows.append({"method": name if over is None else f"{name} over {over}", "kind": "learned",
                     "learning": learned["learning"], "data_seen": learned["data_seen"],
                     "losses": learned["losses"], "seconds": learned["seconds"]["learn"], "memory": learned["memory"],
                     **judged(scores(lambda i, t: task_classifier(out, i), "test"))})
        say(f"{rows[-1]['method']}: {100 * rows[-1]['average']['normalized']:.2f} % normalised, "
            f"{rows[-1]['seconds']} s")
    return {"variant": variant, "tasks": tasks, "base": str(classifiers.base),
            "classifiers": {t: str(p) for t, p in classifiers.classifiers.items()},
            "own_classifiers": {"validation": own["validation"], "test": own["test"]}, "rows": rows}
