"""LoraHub for a user's causal-LM LoRA library (`taskfuse route lorahub`): one weight per adapter searched without
gradients (routing/lorahub.py: CMA-ES, the paper's budget, bounds and L1 penalty) on a few examples of a new task,
then written as one PEFT adapter, exactly Σ wᵢ·ΔWᵢ by concatenated factors (programs/merge_to_adapter.py).

The examples are a JSONL file in the format `taskfuse learn --spec` reads: {"prompt", "completion"} (loss on the
completion) or {"text"}. Decided here: an adapter whose searched weight is exactly 0 is left out of the output; if
no weighting beats the base on the examples, nothing is written (the command says so and fails)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ..errors import UsageError
from ..io.output import check_output_dir
from ..routing.library import LoraLibrary
from ..routing.lorahub import LoraHubSearch, search_weights
from ..routing.weighted import WeightedMixture
from .library_text import all_batches, causal_lm_loader, mean_loss, pad_id, tokenizer_of
from .merge_to_adapter import merge_to_adapter
from .text_data import read_examples

LOSS_BATCH = 8


def lorahub_adapter(base: str, adapters: dict[str, str], data: str | Path, out: str | Path,
                    how: LoraHubSearch = LoraHubSearch(),
                    progress: Callable[[int, float], None] | None = None) -> dict:
    """Search the adapters' weights on `data` and write the weighted adapter to `out`; what its report records, and
    whether it was written (not where no weighting beat the base on the examples)."""
    out = Path(out)
    if len(adapters) < 2:  # and the cma package's CMA-ES fails on one dimension
        raise UsageError(f"LoraHub weighs a library of adapters; {len(adapters)} given. Fix: give two or more "
                         "--adapter, or scale a single adapter with `taskfuse merge` (task_arithmetic, weight w).")
    check_output_dir(out, "adapter")
    load_base = causal_lm_loader(base)
    library = LoraLibrary.from_adapters(base, adapters)
    tok = tokenizer_of(base)
    examples = read_examples(data, tok, labelled=True)
    batches = all_batches(examples, LOSS_BATCH, pad_id(tok))
    mixture = WeightedMixture(load_base().eval(), library)
    evaluations = []

    def loss(weights: list[float]) -> float:
        value = mean_loss(mixture.set(weights), batches)
        evaluations.append(value)
        if progress:
            progress(len(evaluations), value)
        return value

    searched = search_weights(loss, len(library.experts), how)
    weights = dict(zip(library.experts, searched.weights))
    record = {"weights": weights, "objective": searched.objective, "objective_at_start": searched.objective_at_start,
              "evaluations": searched.evaluations, "history": searched.history, "search": asdict(how),
              "data_seen": examples.describe(labels=True)}
    if not any(weights.values()):  # the base itself was best: there is no update to write
        return {"lorahub": record, "written": False}
    spec = {"method": "task_arithmetic", "base": str(base), "params": {"scale": 1.0}, "dtype": "float32",
            "models": [{"path": str(adapters[name]), "weight": w} for name, w in weights.items() if w != 0]}
    return {**merge_to_adapter(spec, out, extra={"lorahub": record}), "written": True}
