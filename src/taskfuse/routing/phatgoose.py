"""PHATGOOSE (Muqeeth et al. 2024, "Learning to Route Among Specialized Experts for Zero-Shot Generalization",
arXiv:2402.05859): after an adapter is trained, a gate vector v per adapted module is trained on that adapter's own
data with everything else frozen, scaling the adapter's output by σ(v·x) per token. At inference each token goes to
the top-k adapters by the affinity of its standardised activation with their standardised gates, scaled by 1/√d.

Choices, following the paper and its released library (mttl): v starts at 0, 100 Adam steps at lr 1e-3, k = 2,
standardisation = subtracting the mean and dividing by the standard deviation over the d features; the top-k
affinities are mixed by a softmax (as Arrow mixes its top-k)."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

from .library import ExpertUpdate, LoraLibrary
from .modules import route


class SigmoidGate(nn.Module):
    """One expert's gate while it is trained: coefficient σ(v·x) per token."""

    def __init__(self, in_features: int):
        super().__init__()
        self.v = nn.Parameter(torch.zeros(in_features))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(tokens @ self.v).unsqueeze(1)  # (t, 1)


def standardize(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True).clamp_min(1e-6)


class PhatgooseRouter(nn.Module):
    def __init__(self, gates: torch.Tensor, top_k: int = 2):
        super().__init__()
        self.register_buffer("gates", gates)  # (E, in); a row of zeros for an expert absent here (never chosen)
        self.top_k = min(top_k, gates.shape[0])

    @classmethod
    def for_updates(cls, updates: list[ExpertUpdate | None], in_features: int, gates: torch.Tensor | None = None,
                    top_k: int = 2) -> "PhatgooseRouter":
        return cls(gates if gates is not None else torch.zeros(len(updates), in_features), top_k)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        present = self.gates.abs().sum(1) > 0
        scores = standardize(tokens) @ standardize(self.gates).T / math.sqrt(tokens.shape[1])  # (t, E)
        scores = scores.masked_fill(~present, float("-inf"))
        top, index = scores.topk(min(self.top_k, int(present.sum())), dim=1)
        masked = torch.full_like(scores, float("-inf")).scatter(1, index, top)
        return torch.softmax(masked, dim=1)


def train_gates(make_model: Callable[[], nn.Module], library: LoraLibrary, expert: str,
                batches: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                steps: int = 100, lr: float = 1e-3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Module name → trained gate vector of `expert`: the base (from `make_model`) with only this expert's update
    in each module, gated by σ(v·x); only the v's learn, from `loss_fn(model, ids, mask, labels)` on `batches`."""
    torch.manual_seed(seed)
    single = LoraLibrary(library.base, [expert], {m: {expert: per[expert]} for m, per in library.modules.items()
                                                  if expert in per})
    gates: dict[str, SigmoidGate] = {}

    def gate(name: str, updates, module) -> nn.Module:
        gates[name] = SigmoidGate(module.in_features)
        return gates[name]

    model = route(make_model(), single, gate)
    model.requires_grad_(False)
    params = [g.v for g in gates.values()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr)
    model.train()
    for _, (ids, mask, labels) in zip(range(steps), batches):
        loss = loss_fn(model, ids, mask, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {name: g.v.detach().clone() for name, g in gates.items()}


def gate_matrix(library: LoraLibrary, gates: dict[str, dict[str, torch.Tensor]], module: str,
                in_features: int) -> torch.Tensor:
    """(E, in) gates of one module in library order; zeros where an expert has no update (or no gate) there."""
    rows = [gates.get(e, {}).get(module) for e in library.experts]
    return torch.stack([r if r is not None else torch.zeros(in_features) for r in rows])
