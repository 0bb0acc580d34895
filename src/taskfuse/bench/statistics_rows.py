"""The benchmark's data-aware closed-form rows: RegMean, RegMean++ and Fisher merging of the zoo's experts.

Each expert's statistics come from its own task's validation split (RegMean: unlabelled inputs; Fisher: the
empirical Fisher of labelled examples, and FusionBench's estimator, which reads inputs only), are written as the
statistics folders `taskfuse statistics` writes, and the merge runs through the streaming engine from a plain spec
naming them, so the row's model is what `taskfuse merge` replays (the folders stay in the cache, under statistics/,
replaced by the next run). They are gathered afresh on every run: that takes seconds to two minutes on the full zoo,
and a stale cache could outlive the code that made it.

Where a row has alternatives (RegMean's α; Fisher's estimator and floor), each is merged and scored on the labelled
validation split, as the data-free rows' parameters are, and the best is kept.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import api
from ..eval.encoder import Encoded, encode, load_encoder, load_tokenizer, sentence_embedding
from ..eval.harness import Evaluator, Score, as_dict, mean, normalized
from ..io.cache_dir import cache_root
from ..io.statistics_file import save_statistics
from ..programs.fisher_labels import fisher_of_labels
from ..programs.regmean_sequential import sequential_grams
from ..programs.statistics import gram_statistics, normalized_fisher
from ..zoo.build import Zoo
from .learned_row import TENSOR_RULES
from .memory import RssPeak

BATCH = 32
FISHER_BATCH = 16  # examples per squared gradient in FusionBench's estimator, as its fisher_merging batches them


@dataclass(frozen=True)
class StatisticsMethod:
    name: str  # the row's name
    method: str  # the registered merge method that reads the statistics
    kind: str  # gram | fisher
    sequential: bool  # RegMean++: Grams through the partly merged model
    labelled: bool
    params: dict = field(default_factory=dict)
    paper: str = ""
    # alternatives to `params`, chosen on the labelled validation split as the data-free rows' are (the statistics
    # are gathered once; RegMean++'s depend on α, so it keeps `params`)
    grid: tuple[dict, ...] = ()
    # Fisher: the estimators gathered, as (labels of programs/fisher_labels.py, examples per squared gradient); each
    # is merged with every grid point (the first alone when nothing is scored on validation)
    estimators: tuple[tuple[str, int], ...] = ()


REGMEAN = "Jin et al. 2023, RegMean, ICLR, arXiv:2212.09849"
STATISTICS_ROWS = {m.name: m for m in (
    StatisticsMethod("regmean", "regmean", "gram", False, False, {"off_diagonal_scale": 0.9}, REGMEAN,
                     tuple({"off_diagonal_scale": a} for a in (0.1, 0.5, 0.9, 1.0))),
    StatisticsMethod("regmean_plusplus", "regmean", "gram", True, False, {"off_diagonal_scale": 0.9},
                     "Nguyen et al. 2025, RegMean++, arXiv:2508.03121"),
    # the empirical Fisher the paper defines, and FusionBench's estimator, which merged these experts 1.5 points
    # better (benchmarks/results/fisher-labels); floors under 1e-6 helped both there, 1e-5 neither
    StatisticsMethod("fisher", "fisher", "fisher", False, True, {"floor": 1e-6},
                     "Matena & Raffel 2022, Fisher merging, NeurIPS, arXiv:2111.09832 (normalised per model); "
                     "FusionBench 0.2.33's estimator as an alternative",
                     tuple({"floor": f} for f in (1e-6, 1e-7, 1e-8)),
                     (("given", 1), ("weighted-sum", FISHER_BATCH))),
)}


def _features(model: nn.Module, inputs: dict) -> torch.Tensor:
    return sentence_embedding(model, inputs["ids"], inputs["mask"])


def validation_data(zoo: Zoo) -> dict[str, Encoded]:
    tokenizer = load_tokenizer(zoo.base_dir)
    return {name: encode(tokenizer, task.splits["validation"].texts, task.splits["validation"].labels)
            for name, task in zoo.tasks.items()}


def _batches(data: Encoded) -> list[dict]:
    return [{"ids": ids, "mask": mask} for _, ids, mask in data.batches(BATCH)]


def example_items(data: Encoded, size: int):
    """(inputs, labels) of `size` examples each: one at a time in length order, or batches in a seeded order (as a
    shuffled loader gives them)."""
    order = None if size == 1 else torch.randperm(len(data.ids), generator=torch.Generator().manual_seed(0)).tolist()
    for rows, ids, mask in data.batches(size, order):
        yield {"ids": ids, "mask": mask}, data.labels[rows]


def gather(zoo: Zoo, row: StatisticsMethod, work: Path, report,
           estimators: tuple[tuple[str, int], ...] | None = None) -> tuple[dict[str, list[Path]], dict]:
    """Each expert's statistics folders under `work` by estimator (one set named "" for Grams; Fisher's `estimators`,
    default the row's), and what was gathered from which data."""
    data = validation_data(zoo)
    names = list(zoo.experts)
    about = {"split": "validation", "labels": row.labelled, "examples": {t: len(data[t].ids) for t in names}}

    def save(t: str, stats: dict, estimator: tuple[str, int] | None = None) -> Path:
        meta = {"model": str(zoo.experts[t].model_dir), "task": t, "split": "validation", "labels": row.labelled,
                "examples": about["examples"][t]}
        if estimator:  # only the empirical Fisher reads the labels
            meta.update(labels=estimator[0] == "given", fisher_labels=estimator[0], examples_per_item=estimator[1])
        return save_statistics(work / "-".join(["statistics", *(estimator[:1] if estimator else ()), t]), stats,
                               row.kind, meta)

    if row.sequential:
        models = [load_encoder(zoo.experts[t].model_dir) for t in names]
        grams, _ = sequential_grams(models, [_batches(data[t]) for t in names], _features, [1.0] * len(names),
                                    row.params["off_diagonal_scale"],
                                    lambda done, total: report("learn", done, total, f"{row.name} depth {done}"))
        return {"": [save(t, g) for t, g in zip(names, grams)]}, about
    if row.kind == "gram":
        folders = []
        for i, t in enumerate(names):  # each expert's statistics written before the next is gathered: one in memory
            report("learn", i, len(names), f"{row.name} statistics of {t}")
            folders.append(save(t, gram_statistics(load_encoder(zoo.experts[t].model_dir), _batches(data[t]),
                                                   _features)))
        return {"": folders}, about
    sets = {}
    for estimator in row.estimators if estimators is None else estimators:
        started, folders = time.perf_counter(), []
        for i, t in enumerate(names):
            report("learn", i, len(names), f"{row.name} statistics ({estimator[0]}) of {t}")
            fisher, norm = _fisher(load_encoder(zoo.experts[t].model_dir), zoo.experts[t].head(), data[t], estimator)
            about.setdefault("fisher_norms", {}).setdefault(estimator[0], {})[t] = norm
            folders.append(save(t, fisher, estimator))
        about.setdefault("seconds", {})[estimator[0]] = round(time.perf_counter() - started, 1)
        sets[estimator[0]] = folders
    return sets, about


def _fisher(model: nn.Module, head: nn.Module, data: Encoded, estimator: tuple[str, int]) -> tuple[dict, float]:
    """The expert's Fisher scaled to unit norm, and its norm as a sum over items per example."""
    labels, size = estimator
    fisher, items = fisher_of_labels(model, example_items(data, size), lambda m, inputs: head(_features(m, inputs)),
                                     labels)
    for f in fisher.values():  # a mean over items, as a mean over examples (items of `size` hold that many)
        f.mul_(items / len(data.ids))
    return normalized_fisher(fisher)


def run_statistics_row(zoo: Zoo, row: StatisticsMethod, test: Evaluator, test_experts: dict[str, Score],
                       report, validation: Evaluator | None = None, val_experts: dict[str, Score] | None = None) -> dict:
    """Gather, merge through the engine (each alternative scored on validation, the best kept), score on test."""
    with tempfile.TemporaryDirectory(prefix=f"taskfuse-bench-{row.name}-") as work, RssPeak() as memory:
        chosen = merge_statistics_row(zoo, row, Path(work), report, validation, val_experts)
        report("test", 0, 1, row.name)
        scores = test.score(load_encoder(chosen["out"]))
    norm = normalized(scores, test_experts)
    spec, about = chosen["spec"], chosen["data_seen"]
    data = ("unlabelled validation inputs" if not row.labelled else
            "validation examples: the empirical Fisher reads their labels, FusionBench's estimator their inputs; "
            "the labels choose between them" if len(row.estimators) > 1 and validation is not None else
            "labelled validation examples (empirical Fisher)")
    estimator = {"fisher_labels": chosen["estimator"]} if chosen["estimator"] else {}
    return {"method": row.name, "kind": "learned", "params": {"statistics": row.kind + (" through the merged model"
                                                                                      if row.sequential else ""),
                                                              **estimator, **spec["params"], "data": data},
            "learning": {"paper": row.paper, "statistics": row.kind, "sequential": row.sequential, **estimator},
            "data_seen": about, "spec": spec, "trials": chosen["trials"], "tasks": list(zoo.experts),
            "seconds": chosen["seconds"], "memory": {"rss_added_mib": round(memory.added / (1 << 20))},
            "test": as_dict(scores), "test_normalized": norm,
            "average": {"accuracy": mean(s.accuracy for s in scores.values()),
                        "macro_f1": mean(s.macro_f1 for s in scores.values()), "normalized": mean(norm.values())}}


def merge_statistics_row(zoo: Zoo, row: StatisticsMethod, work: Path, report, validation: Evaluator | None = None,
                         val_experts: dict[str, Score] | None = None) -> dict:
    """The row's statistics gathered (into the cache, where its spec names them), its alternatives merged and scored
    on validation, the best merged model under `work`: {"spec", "out", "estimator", "trials", "data_seen",
    "seconds"}. Without a validation evaluator, the row's first estimator at its default parameters."""
    kept = cache_root() / "statistics" / f"{zoo.variant.name}-{row.name}"
    started = time.perf_counter()
    sets, about = gather(zoo, row, kept, report, None if validation is not None else row.estimators[:1])
    gathered = time.perf_counter() - started
    started = time.perf_counter()
    candidates = row.grid if row.grid and validation is not None else (row.params,)
    points = [(estimator, params) for estimator in sets for params in candidates]
    best, trials = None, []
    for i, (estimator, params) in enumerate(points):
        report("search", i + 1, len(points), f"{row.name} {estimator} {params}".replace("  ", " "))
        models = [{"path": str(e.model_dir), "statistics": str(f)}
                  for e, f in zip(zoo.experts.values(), sets[estimator])]
        spec = {"method": row.method, "base": str(zoo.base_dir), "seed": zoo.variant.recipe.seed, "dtype": "float32",
                "models": models, "params": params, "tensor_rules": TENSOR_RULES}
        out = work / f"trial{i}"
        api.merge(spec, out)
        if len(points) == 1:
            best = (None, spec, out, estimator)
            break
        score = mean(normalized(validation.score(load_encoder(out)), val_experts).values())
        trials.append({**({"fisher_labels": estimator} if estimator else {}), "params": params,
                       "validation_normalized": score})
        if best is None or score > best[0]:
            if best is not None:
                shutil.rmtree(best[2])  # a merged model per losing point would fill the disk on a bigger model
            best = (score, spec, out, estimator)
        else:
            shutil.rmtree(out)
    return {"spec": best[1], "out": best[2], "estimator": best[3], "trials": trials, "data_seen": about,
            "seconds": {"statistics": round(gathered, 1), "merge": round(time.perf_counter() - started, 1)}}
