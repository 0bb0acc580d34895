"""Twin-Merging (Lu et al. 2024, "Twin-Merging: Dynamic Integration of Modular Expertise in Model Merging",
arXiv:2406.15479): a shared expert (any static merge) plus each task's exclusive knowledge θ_t − θ*, compressed by
truncated SVD; a small router on the shared model's pooled features of an input weighs the exclusive parts for that
input. Linear layers carry the exclusive parts; every other tensor is the shared merge's (our reading: the paper
compresses the matrices; norms and biases are small and left shared)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from ..eval.encoder import sentence_embedding
from .library import ExpertUpdate, LoraLibrary
from .modules import RoutedUpdate, route


def exclusive_library(shared: dict[str, torch.Tensor], experts: dict[str, dict[str, torch.Tensor]],
                      linear: set[str], rank: int, shared_ref: str) -> LoraLibrary:
    """Each task's θ_t − θ* on every linear weight, as its best rank-`rank` factors (B = U·S, A = Vᵀ)."""
    modules: dict[str, dict[str, ExpertUpdate]] = {}
    for name in sorted(linear):
        for task, state in experts.items():
            exclusive = state[name].float() - shared[name].float()
            if not exclusive.any():
                continue
            u, s, vh = torch.linalg.svd(exclusive, full_matrices=False)
            modules.setdefault(name.removesuffix(".weight"), {})[task] = ExpertUpdate(
                vh[:rank].contiguous(), (u[:, :rank] * s[:rank]).contiguous())
    return LoraLibrary(shared_ref, list(experts), modules)


class InputRouting(nn.Module):
    """Coefficients fixed per input for the next forward pass: (B, E) expanded to each of the input's tokens."""

    def __init__(self, experts: int):
        super().__init__()
        self.experts = experts
        self.current: torch.Tensor | None = None  # (B, E), set by TwinMerged before the routed pass

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.current is None:  # the shared pass: no exclusive part
            return tokens.new_zeros(tokens.shape[0], self.experts)
        per_input = tokens.shape[0] // self.current.shape[0]
        return self.current.repeat_interleave(per_input, dim=0)


class TwinMerged(nn.Module):
    """The shared encoder with routed exclusive parts; called like the encoder (input_ids, attention_mask).
    `router_params` is what rebuilds the router's shape (see routing/store.py)."""

    def __init__(self, shared_encoder: nn.Module, library: LoraLibrary, router: nn.Module):
        super().__init__()
        self.router = router
        self.encoder = route(shared_encoder, library, lambda name, updates, module: InputRouting(len(updates)))
        self.routings = [m.router for m in self.encoder.modules() if isinstance(m, RoutedUpdate)]
        first, last = router[0], router[-1]
        self.router_params = {"features": first.in_features, "hidden": first.out_features,
                              "experts": last.out_features}
        self.task: int | None = None

    def use_task(self, task: int | None) -> None:
        """Serve every input with exclusive part `task` alone, as EMR-Merging serves a task whose identity is known
        (one encoder pass, the router unused); None goes back to routing by the input."""
        if task is not None and not 0 <= task < self.router_params["experts"]:
            raise UsageError(f"Twin-Merging model: task {task} is not one of its {self.router_params['experts']} "
                             f"exclusive parts. Fix: give an index from 0 to {self.router_params['experts'] - 1} "
                             "(the library's order), or None to route by the input")
        self.task = task

    def set_coefficients(self, coefficients: torch.Tensor | None) -> None:
        for routing in self.routings:
            routing.current = coefficients

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The shared model's pooled, normalised sentence embedding: what the router sees."""
        self.set_coefficients(None)
        return sentence_embedding(self.encoder, input_ids, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs):
        if self.task is None:
            weights = torch.softmax(self.router(self.features(input_ids, attention_mask)), dim=-1)  # (B, E)
        else:
            weights = nn.functional.one_hot(torch.full((input_ids.shape[0],), self.task),
                                            self.router_params["experts"]).float()
        self.set_coefficients(weights)
        try:
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        finally:
            self.set_coefficients(None)


ROUTER_HIDDEN = 128


def router_mlp(features: int, experts: int, hidden: int = ROUTER_HIDDEN) -> nn.Module:
    """The router's shape: a two-layer MLP from pooled features to one logit per exclusive part."""
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, experts))


def train_router(features: torch.Tensor, tasks: torch.Tensor, experts: int, steps: int = 300, lr: float = 1e-2,
                 seed: int = 0) -> nn.Module:
    """The router MLP trained with cross-entropy on inputs labelled only by the task they come from (full batch,
    Adam)."""
    torch.manual_seed(seed)
    router = router_mlp(features.shape[1], experts)
    optimizer = torch.optim.Adam(router.parameters(), lr=lr)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(router(features), tasks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return router.eval().requires_grad_(False)
