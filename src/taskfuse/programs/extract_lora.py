"""A PEFT LoRA adapter from a full fine-tune: each changed matrix's update ΔW = model − base, truncated by SVD.

Streams one tensor at a time (the adapter's small factors are all that accumulate). Linear, transformers Conv1D
(fan-in-fan-out) and embedding weights become LoRA factors, B·A being the best rank-r approximation of ΔW
(Eckart–Young); scaling is 1 (lora_alpha = r, per module through rank_pattern/alpha_pattern). What LoRA cannot
express is saved whole, as PEFT does: changed biases (bias="all") and changed non-matrix modules such as norms
(modules_to_save). The relative error ‖ΔW − B·A‖_F / ‖ΔW‖_F of every module is reported.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..errors import IncompatibleInputsError, UsageError
from ..io.checkpoint import Checkpoint
from .adapter_files import AdapterBuilder, write_adapter
from .adapter_task import task_fields

FACTORED_KINDS = ("linear", "conv1d", "embedding")
REPORT = "taskfuse_extraction.json"


@dataclass(frozen=True)
class RankRule:
    """A fixed rank, or the smallest rank keeping `energy` of ΔW's squared singular values."""

    rank: int | None = None
    energy: float | None = None

    def __post_init__(self):
        if (self.rank is None) == (self.energy is None):
            raise UsageError("give exactly one of --rank R (a fixed rank) or --energy E (keep the fraction E of each "
                             "update's squared singular values, 0 < E ≤ 1).")
        if self.rank is not None and self.rank < 1:
            raise UsageError(f"--rank {self.rank}: a LoRA rank is at least 1.")
        if self.energy is not None and not 0 < self.energy <= 1:
            raise UsageError(f"--energy {self.energy}: give a fraction in (0, 1], e.g. 0.9.")

    def choose(self, singular_values: torch.Tensor) -> int:
        if self.rank is not None:
            return min(self.rank, len(singular_values))
        power = singular_values.double() ** 2
        kept = torch.cumsum(power, 0) / power.sum()
        return int(torch.searchsorted(kept, torch.tensor(self.energy, dtype=kept.dtype) - 1e-12).item()) + 1


@dataclass
class ModuleReport:
    module: str
    kind: str
    shape: tuple[int, ...]
    rank: int
    relative_error: float  # ‖ΔW − B·A‖_F / ‖ΔW‖_F
    energy_kept: float


@dataclass
class Extraction:
    out: Path
    modules: list[ModuleReport] = field(default_factory=list)
    saved_whole: list[str] = field(default_factory=list)  # tensors stored in full (biases, norms)
    unchanged: int = 0
    seconds: float = 0.0

    def summary(self) -> dict:
        errors = [m.relative_error for m in self.modules]
        return {"modules": len(self.modules), "tensors_saved_whole": len(self.saved_whole),
                "tensors_unchanged": self.unchanged,
                "rank": {"min": min((m.rank for m in self.modules), default=0),
                         "max": max((m.rank for m in self.modules), default=0)},
                "relative_error": {"mean": sum(errors) / len(errors) if errors else 0.0,
                                   "max": max(errors, default=0.0)},
                "seconds": round(self.seconds, 2)}


def module_kinds(ckpt: Checkpoint) -> dict[str, str]:
    """module name → linear | conv1d | embedding | other, from the model class built on the meta device (no
    memory): a tensor's name alone cannot tell a Linear from an Embedding or a transposed Conv1D."""
    import transformers
    from transformers.pytorch_utils import Conv1D

    if not ckpt.config:
        raise IncompatibleInputsError(f"model {ckpt.ref!r} has no config.json, so its layer types are unknown. "
                                      "Fix: give the model directory saved by save_pretrained.")
    config = transformers.AutoConfig.for_model(**ckpt.config)
    classes = [getattr(transformers, a, None) for a in (ckpt.config.get("architectures") or [])]
    cls = next((c for c in classes if c is not None), transformers.AutoModel)
    with torch.device("meta"):
        model = cls.from_config(config) if cls is transformers.AutoModel else cls._from_config(config)
    kinds = {}
    for name, module in model.named_modules():
        if isinstance(module, Conv1D):
            kinds[name] = "conv1d"
        elif isinstance(module, torch.nn.Linear):
            kinds[name] = "linear"
        elif isinstance(module, torch.nn.Embedding):
            kinds[name] = "embedding"
        else:
            kinds[name] = "other"
    return kinds


def extract_lora(model: str | Path, base: str | Path, out: str | Path, rule: RankRule, *,
                 progress: Callable[[int, int, str], None] | None = None, label: str | None = None,
                 task: dict | None = None) -> Extraction:
    """Write a PEFT LoRA adapter to `out` (atomically) that turns `base` into (an approximation of) `model`;
    its task type is `task`, else the fine-tune's (adapter_task.py)."""
    started = time.perf_counter()
    fine_tune, pretrained = Checkpoint.open(model), Checkpoint.open(base)
    check_same_tensors(fine_tune, pretrained)
    result, adapter = Extraction(Path(out)), AdapterBuilder()
    factor_updates(fine_tune, pretrained, rule, result, adapter, progress)
    if not adapter:
        raise IncompatibleInputsError(f"model {fine_tune.ref!r} is identical to the base {pretrained.ref!r}: there "
                                      "is no update to extract.")
    needed = adapter.siblings_needed()
    tensors, config = adapter.finish(pretrained.ref, {n: fine_tune.read(n) for n in fine_tune.tensors
                                                      if n.rpartition(".")[0] in needed},
                                     task or task_fields([fine_tune], pretrained.config))
    if rule.rank is not None:  # the asked rank is the config's r; smaller matrices get theirs in rank_pattern
        differing = {m: r for m, r in adapter.ranks.items() if r != rule.rank}
        config = {**config, "r": rule.rank, "lora_alpha": rule.rank, "rank_pattern": differing,
                  "alpha_pattern": dict(differing)}
    result.seconds = time.perf_counter() - started
    write_adapter(Path(out), tensors, config, REPORT, {
        "model": label or str(model), "base": str(base), "rule": asdict(rule), "summary": result.summary(),
        "modules": [asdict(m) for m in result.modules], "saved_whole": result.saved_whole})
    return result


def factor_updates(fine_tune: Checkpoint, pretrained: Checkpoint, rule: RankRule, result: Extraction,
                   adapter: AdapterBuilder, progress: Callable[[int, int, str], None] | None) -> None:
    """One tensor at a time: a changed matrix of a LoRA-able layer becomes factors, any other change is kept whole."""
    kinds = _resolve_kinds(module_kinds(pretrained), pretrained)
    names = [n for n, m in fine_tune.tensors.items() if m.dtype.is_floating_point]
    for done, name in enumerate(names, 1):
        delta = fine_tune.read(name).float() - pretrained.read(name).float()
        module, _, param = name.rpartition(".")
        kind = kinds.get(module, "other")
        if not delta.any():
            result.unchanged += 1
        elif kind in FACTORED_KINDS and param == "weight":
            report, a, b = factorize(delta, kind, rule, module)
            result.modules.append(report)
            adapter.add_factors(module, kind, a, b)
        else:
            adapter.add_whole(name, fine_tune.read(name))
            result.saved_whole.append(name)
        if progress:
            progress(done, len(names), name)


def factorize(delta: torch.Tensor, kind: str, rule: RankRule, module: str) -> tuple[ModuleReport, torch.Tensor,
                                                                                    torch.Tensor]:
    """B, A with B·A the best rank-r approximation of ΔW in PEFT's orientation for the layer kind."""
    matrix = delta if kind == "linear" else delta.T  # PEFT applies (B·A)ᵀ to Conv1D and embedding weights
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    rank = rule.choose(s)
    b, a = (u[:, :rank] * s[:rank]).contiguous(), vh[:rank].contiguous()
    total = float((s.double() ** 2).sum())
    kept = float((s[:rank].double() ** 2).sum())
    error = float(torch.linalg.norm(matrix - b @ a) / torch.linalg.norm(matrix))
    return ModuleReport(module, kind, tuple(delta.shape), rank, error, kept / total if total else 1.0), a, b


def check_same_tensors(model: Checkpoint, base: Checkpoint) -> None:
    problems = [f"tensor {n!r} is {'×'.join(map(str, m.shape))} in the model but "
                f"{'×'.join(map(str, base.meta(n).shape))} in the base"
                for n, m in model.tensors.items() if n in base.tensors and base.meta(n).shape != m.shape]
    # A tensor only the base has (a buffer such as position_ids that save_pretrained left out of the fine-tune) is
    # the base's in the adapted model too; one only the fine-tune has cannot be added by an adapter.
    extra = sorted(set(model.tensors) - set(base.tensors))
    problems += [f"tensor {n!r} is in the model but not in the base" for n in extra[:5]]
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems[:12])
        raise IncompatibleInputsError(f"model {model.ref!r} is not a fine-tune of base {base.ref!r} with the same "
                                      f"tensors ({len(problems)} problem(s)):\n{listed}\nFix: give the base it was "
                                      "fine-tuned from (a resized vocabulary cannot be expressed as a LoRA update).")


def _resolve_kinds(kinds: dict[str, str], ckpt: Checkpoint) -> dict[str, str]:
    """Module kinds keyed by the checkpoint's own module names (a saved model may drop or add the class's prefix,
    e.g. `model.` inside a ...ForCausalLM)."""
    modules = {n.rpartition(".")[0] for n in ckpt.tensors}
    resolved = {}
    for module in modules:
        if module in kinds:
            resolved[module] = kinds[module]
            continue
        longer = [k for k in kinds if k.endswith("." + module)]
        shorter = [module.split(".", i)[-1] for i in range(1, module.count(".") + 1)]
        found = longer[0] if len(longer) == 1 else next((s for s in shorter if s in kinds), None)
        resolved[module] = kinds.get(found, "other")
    return resolved
