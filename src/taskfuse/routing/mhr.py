"""Multi-Head Routing (Caccia et al. 2023, "Multi-Head Adapter Routing for Cross-Task Generalization",
arXiv:2211.03831), of which Poly (Ponti et al. 2023, arXiv:2202.13914) is the one-head case: a library of LoRA
adapters is an inventory of skills; per adapted module and task, learned logits Z (heads × skills) mix the skills'
factors, head block by head block: A's input columns and B's output rows are split into `heads` contiguous blocks,
block q of the task's A (and B) is Σ_s w_qs · block q of skill s's A (B), with w_q = σ(Z_q) / Σ σ(Z_q). The task's
update is then B_task·A_task — a mixture in factor space, as the papers define it, not a sum of the skills' ΔW.

PEFT's Poly (`peft.tuners.poly`) is our reference for the forward pass and the routing distribution (relaxed
Bernoulli samples while training, sigmoid at inference); our tests check outputs equal to PEFT's given the same
skills and logits. Differences, on purpose: skills come from an existing library (each adapter's LoRA scaling folded
into its B, so PEFT's 1/r is not applied again); ranks that differ are zero-padded to the largest (exact: a padded
row of A meets a padded column of B); an adapter that leaves a module alone is an all-zero skill there; the logits
start at exactly 0 (PEFT: uniform ±1e-3), i.e. at the library's average in factor space."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.distributions.relaxed_bernoulli import RelaxedBernoulli

from ..errors import AdapterError
from .library import ExpertUpdate, LoraLibrary
from .modules import replace_adapted

EPS = 1e-12  # PEFT's: keeps an all-zero sample from dividing by zero


class MultiHeadRouted(nn.Module):
    """y = base(x) + x·A_t·B_t per example, A_t and B_t the task's head-wise mixture of the library's factors."""

    def __init__(self, base: nn.Linear, updates: list[ExpertUpdate | None], heads: int, tasks: int = 1,
                 name: str = "module"):
        super().__init__()
        self.base, self.heads = base, heads
        self.in_features, self.out_features = base.in_features, base.out_features
        if self.in_features % heads or self.out_features % heads:
            raise AdapterError(f"{name}: {self.in_features} inputs and {self.out_features} outputs do not split into "
                               f"{heads} head blocks. Fix: choose a number of heads that divides both.")
        rank = max(u.a.shape[0] for u in updates if u is not None)
        a = torch.zeros(len(updates), rank, self.in_features)
        b = torch.zeros(len(updates), self.out_features, rank)
        for e, u in enumerate(updates):
            if u is not None:
                a[e, :u.a.shape[0]], b[e, :, :u.b.shape[1]] = u.a, u.b
        self.rank = rank
        # PEFT's layout: A (heads, skills, in/heads, r) and B (heads, skills, r, out/heads)
        self.skill_a = nn.Parameter(a.reshape(len(updates), rank, heads, -1).permute(2, 0, 3, 1).contiguous(),
                                    requires_grad=False)
        self.skill_b = nn.Parameter(b.reshape(len(updates), heads, -1, rank).permute(1, 0, 3, 2).contiguous(),
                                    requires_grad=False)
        self.logits = nn.Parameter(torch.zeros(tasks, heads, len(updates)))
        self.task_ids: torch.Tensor | None = None  # per example of the next batch; None: `self.task` for all
        self.task = 0

    def mixing(self, batch: int) -> torch.Tensor:
        """(batch, heads, skills) weights, each head's summing to 1."""
        ids = self.task_ids if self.task_ids is not None else torch.full((batch,), self.task)
        if len(ids) != batch:
            raise ValueError(f"{len(ids)} task ids for a batch of {batch}")
        logits = self.logits[ids.to(self.logits.device)]
        probs = RelaxedBernoulli(temperature=1.0, logits=logits).rsample() if self.training else torch.sigmoid(logits)
        return probs / (probs.sum(-1, keepdim=True) + EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        batch = x.shape[0]
        weights = self.mixing(batch)
        a = torch.einsum("bhs,hsdr->bhdr", weights, self.skill_a).reshape(batch, self.in_features, self.rank)
        b = torch.einsum("bhs,hsrd->bhrd", weights, self.skill_b).transpose(1, 2).reshape(
            batch, self.rank, self.out_features)
        tokens = x.reshape(batch, -1, self.in_features).to(a.dtype)
        return y + tokens.bmm(a).bmm(b).reshape(y.shape).to(y.dtype)


def route_mhr(model: nn.Module, library: LoraLibrary, heads: int, tasks: int = 1) -> nn.Module:
    """Replace, in place, each adapted module of `model` by a MultiHeadRouted over the library; returns the model."""
    return replace_adapted(model, library, lambda name, updates, base: MultiHeadRouted(base, updates, heads, tasks,
                                                                                         name))


def mhr_modules(model: nn.Module) -> list[MultiHeadRouted]:
    return [m for m in model.modules() if isinstance(m, MultiHeadRouted)]


def set_task_ids(model: nn.Module, ids: torch.Tensor | None) -> None:
    """The task of each example in the next batches (a batch may mix tasks), for every routed module."""
    for m in mhr_modules(model):
        m.task_ids = ids


def use_task(model: nn.Module, task: int) -> None:
    """Every example from now on is of task `task` (when no per-example task ids are set)."""
    for m in mhr_modules(model):
        m.task_ids, m.task = None, task


def adapt(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
          loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], steps: int,
          routing_lr: float, skills_lr: float | None = None, seed: int = 0) -> list[float]:
    """Few-shot adaptation to the batches' task: Adam on the routing logits (MHR-z), and on the skills' factors too
    when `skills_lr` is given (Poly's and MHR's full fine-tuning); everything else frozen. Returns each step's loss."""
    torch.manual_seed(seed)  # the relaxed Bernoulli samples
    modules = mhr_modules(model)
    model.requires_grad_(False)
    groups = [{"params": [m.logits for m in modules], "lr": routing_lr}]
    if skills_lr is not None:
        groups.append({"params": [p for m in modules for p in (m.skill_a, m.skill_b)], "lr": skills_lr})
    for group in groups:
        for p in group["params"]:
            p.requires_grad_(True)
    optimizer = torch.optim.Adam(groups)
    was_training = model.training
    model.train()
    losses = []
    try:
        for _, (ids, mask, labels) in zip(range(steps), batches):
            loss = loss_fn(model, ids, mask, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    finally:
        # Hand the model back as it came: left in training mode it would keep sampling its routing.
        model.requires_grad_(False)
        model.train(was_training)
    return losses
