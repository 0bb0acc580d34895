"""Arrow (Ostapenko et al. 2024, "Towards Modular LLMs by Building and Reusing a Library of LoRAs",
arXiv:2405.11157): training-free per-token routing. Each adapter's prototype in a layer is the top right singular
vector of its ΔW (the input direction it amplifies most); a token goes to the k adapters whose prototypes it is most
aligned with, |⟨p_e, x⟩|, mixed by a softmax over those k scores."""
from __future__ import annotations

import torch
from torch import nn

from .library import ExpertUpdate


def prototype(update: ExpertUpdate) -> torch.Tensor:
    """Top right singular vector of B·A, exactly: B = QR gives B·A = Q·(R·A), whose right singular vectors are
    those of the small R·A (r × in). PEFT's reference runs 15 power iterations from a random start instead; the two
    agree wherever the top singular value is separated from the next."""
    q, r = torch.linalg.qr(update.b.double())
    _, _, vh = torch.linalg.svd(r @ update.a.double(), full_matrices=False)
    return vh[0].float()  # (in,), unit norm, sign arbitrary (scores use |·|)


class ArrowRouter(nn.Module):
    def __init__(self, prototypes: torch.Tensor, top_k: int, temperature: float = 1.0):
        super().__init__()
        self.register_buffer("prototypes", prototypes)  # (E, in); a row of zeros for an expert absent here
        self.top_k, self.temperature = min(top_k, prototypes.shape[0]), temperature

    @classmethod
    def for_updates(cls, updates: list[ExpertUpdate | None], in_features: int, top_k: int,
                    temperature: float = 1.0) -> "ArrowRouter":
        rows = [prototype(u) if u is not None else torch.zeros(in_features) for u in updates]
        return cls(torch.stack(rows), top_k, temperature)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(t, in) → (t, E) coefficients: softmax over each token's top-k scores, zero elsewhere."""
        scores = (tokens @ self.prototypes.T).abs()
        top, index = scores.topk(self.top_k, dim=1)
        masked = torch.full_like(scores, float("-inf")).scatter(1, index, top)
        return torch.softmax(masked / self.temperature, dim=1)
