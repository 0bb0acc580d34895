"""The benchmark's data-aware closed-form rows: RegMean, RegMean++ and Fisher merging of the zoo's experts.

Each expert's statistics come from its own task's validation split (RegMean: unlabelled inputs; Fisher: labelled
examples, the empirical Fisher), are written as the statistics folders `taskfuse statistics` writes, and the merge
runs through the streaming engine from a plain spec naming them, so the row's model is what `taskfuse merge`
replays (the folders stay in the cache, under statistics/, replaced by the next run). They are gathered afresh on
every run: that takes seconds to two minutes on the full zoo, and a stale cache could outlive the code that made it.
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
from ..programs.regmean_sequential import sequential_grams
from ..programs.statistics import fisher_statistics, gram_statistics, normalized_fisher
from ..zoo.build import Zoo
from .learned_row import TENSOR_RULES
from .memory import RssPeak

BATCH = 32


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


REGMEAN = "Jin et al. 2023, RegMean, ICLR, arXiv:2212.09849"
STATISTICS_ROWS = {m.name: m for m in (
    StatisticsMethod("regmean", "regmean", "gram", False, False, {"off_diagonal_scale": 0.9}, REGMEAN,
                     tuple({"off_diagonal_scale": a} for a in (0.1, 0.5, 0.9, 1.0))),
    StatisticsMethod("regmean_plusplus", "regmean", "gram", True, False, {"off_diagonal_scale": 0.9},
                     "Nguyen et al. 2025, RegMean++, arXiv:2508.03121"),
    StatisticsMethod("fisher", "fisher", "fisher", False, True, {"floor": 1e-6},
                     "Matena & Raffel 2022, Fisher merging, NeurIPS, arXiv:2111.09832 (empirical Fisher, normalised "
                     "per model)"),
)}


def _features(model: nn.Module, inputs: dict) -> torch.Tensor:
    return sentence_embedding(model, inputs["ids"], inputs["mask"])


def validation_data(zoo: Zoo) -> dict[str, Encoded]:
    tokenizer = load_tokenizer(zoo.base_dir)
    return {name: encode(tokenizer, task.splits["validation"].texts, task.splits["validation"].labels)
            for name, task in zoo.tasks.items()}


def _batches(data: Encoded) -> list[dict]:
    return [{"ids": ids, "mask": mask} for _, ids, mask in data.batches(BATCH)]


def _examples(data: Encoded):
    for rows, ids, mask in data.batches(1):
        yield {"ids": ids, "mask": mask}, data.labels[rows]


def gather(zoo: Zoo, row: StatisticsMethod, work: Path, report) -> tuple[list[Path], dict]:
    """Each expert's statistics folder under `work`, and what was gathered from which data."""
    data = validation_data(zoo)
    names = list(zoo.experts)
    about = {"split": "validation", "labels": row.labelled, "examples": {t: len(data[t].ids) for t in names}}

    def save(t: str, stats: dict) -> Path:
        return save_statistics(work / f"statistics-{t}", stats, row.kind,
                               {"model": str(zoo.experts[t].model_dir), "task": t, "split": "validation",
                                "labels": row.labelled, "examples": about["examples"][t]})

    if row.sequential:
        models = [load_encoder(zoo.experts[t].model_dir) for t in names]
        grams, _ = sequential_grams(models, [_batches(data[t]) for t in names], _features, [1.0] * len(names),
                                    row.params["off_diagonal_scale"],
                                    lambda done, total: report("learn", done, total, f"{row.name} depth {done}"))
        return [save(t, g) for t, g in zip(names, grams)], about
    folders = []
    for i, t in enumerate(names):  # each expert's statistics written before the next is gathered: one in memory
        report("learn", i, len(names), f"{row.name} statistics of {t}")
        model = load_encoder(zoo.experts[t].model_dir)
        folders.append(save(t, gram_statistics(model, _batches(data[t]), _features) if row.kind == "gram" else
                            _fisher(model, zoo.experts[t].head(), data[t], about, t)))
    return folders, about


def _fisher(model: nn.Module, head: nn.Module, data: Encoded, about: dict, task: str) -> dict:
    def log_likelihood(m: nn.Module, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
        return -nn.functional.cross_entropy(head(_features(m, inputs)), labels, reduction="sum")

    fisher, _ = fisher_statistics(model, _examples(data), log_likelihood)
    fisher, norm = normalized_fisher(fisher)
    about.setdefault("fisher_norms", {})[task] = norm
    return fisher


def run_statistics_row(zoo: Zoo, row: StatisticsMethod, test: Evaluator, test_experts: dict[str, Score],
                       report, validation: Evaluator | None = None, val_experts: dict[str, Score] | None = None) -> dict:
    """Gather, merge through the engine (each grid point scored on validation, the best kept), score on test."""
    kept = cache_root() / "statistics" / f"{zoo.variant.name}-{row.name}"
    with tempfile.TemporaryDirectory(prefix=f"taskfuse-bench-{row.name}-") as work, RssPeak() as memory:
        started = time.perf_counter()
        folders, about = gather(zoo, row, kept, report)
        gathered = time.perf_counter() - started
        models = [{"path": str(e.model_dir), "statistics": str(f)} for e, f in zip(zoo.experts.values(), folders)]
        started = time.perf_counter()
        spec, best, trials = _choose(zoo, row, models, Path(work), validation, val_experts, report)
        merged = time.perf_counter() - started
        report("test", 0, 1, row.name)
        scores = test.score(load_encoder(best))
    norm = normalized(scores, test_experts)
    data = ("labelled validation examples (empirical Fisher)" if row.labelled else "unlabelled validation inputs")
    return {"method": row.name, "kind": "learned", "params": {"statistics": row.kind + (" through the merged model"
                                                                                      if row.sequential else ""),
                                                              **spec["params"], "data": data},
            "learning": {"paper": row.paper, "statistics": row.kind, "sequential": row.sequential},
            "data_seen": about, "spec": spec, "trials": trials, "tasks": list(zoo.experts),
            "seconds": {"statistics": round(gathered, 1), "merge": round(merged, 1)},
            "memory": {"rss_added_mib": round(memory.added / (1 << 20))},
            "test": as_dict(scores), "test_normalized": norm,
            "average": {"accuracy": mean(s.accuracy for s in scores.values()),
                        "macro_f1": mean(s.macro_f1 for s in scores.values()), "normalized": mean(norm.values())}}


def _choose(zoo: Zoo, row: StatisticsMethod, models: list[dict], work: Path, validation: Evaluator | None,
            val_experts: dict[str, Score] | None, report) -> tuple[dict, Path, list[dict]]:
    """The spec of the chosen parameters, its merged folder, and every trial's validation score (none scored when
    there is one candidate or no validation evaluator)."""
    candidates = row.grid if row.grid and validation is not None else (row.params,)
    best, trials = None, []
    for i, params in enumerate(candidates):
        report("search", i + 1, len(candidates), f"{row.name} {params}")  # as the grid counts: done, total
        spec = {"method": row.method, "base": str(zoo.base_dir), "seed": zoo.variant.recipe.seed, "dtype": "float32",
                "models": models, "params": params, "tensor_rules": TENSOR_RULES}
        out = work / f"trial{i}"
        api.merge(spec, out)
        if len(candidates) == 1:
            return spec, out, trials
        score = mean(normalized(validation.score(load_encoder(out)), val_experts).values())
        trials.append({"params": params, "validation_normalized": score})
        if best is None or score > best[0]:
            if best is not None:
                shutil.rmtree(best[2])  # a merged model per losing point would fill the disk on a bigger model
            best = (score, spec, out)
        else:
            shutil.rmtree(out)
    return best[1], best[2], trials
