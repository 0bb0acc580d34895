"""Statistics of a model on its task's data, for merges that weigh models by what their data did:

- gram (RegMean): for every linear layer, X^T X / n over the n tokens its inputs held (padding excluded), one
  (in, in) matrix per weight, stored under the weight's name;
- fisher: the diagonal empirical Fisher, the mean over examples of (∂ log p(label | input) / ∂θ)², shaped as each
  parameter (Matena & Raffel 2022, §2; their "empirical" variant, which reads the true labels).

`forward(model, inputs)` runs the model on one batch (an encoder's pooled features, a causal LM's logits: the
caller's choice); `inputs["mask"]`, when present, marks the real tokens of a padded batch.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch
from torch import Tensor, nn

Forward = Callable[[nn.Module, dict], object]
# (model, one item's inputs, its labels) -> a scalar, or a vector of terms whose squared gradients are each added
LogLikelihood = Callable[[nn.Module, dict, Tensor], Tensor]


def linear_weights(model: nn.Module) -> dict[str, nn.Linear]:
    """The model's linear layers by weight name, each once (a weight tied to an embedding is the embedding's)."""
    params = dict(model.named_parameters())
    return {f"{name}.weight": m for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and f"{name}.weight" in params}


class GramAccumulator:
    """Running X^T X and token counts for chosen linear layers, fed by forward hooks while a batch runs."""

    def __init__(self, layers: dict[str, nn.Linear]):
        self.layers = layers
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}
        self.mask: Tensor | None = None  # (B, L) real tokens of the batch now running
        # the last input seen and its Gram: layers fed one tensor in a row (an attention's query, key and value)
        # share one product instead of three; holding the tensor keeps the identity check exact
        self._last: tuple[Tensor, Tensor, int] | None = None

    def _record(self, name: str, x: Tensor) -> None:
        if self._last is not None and self._last[0] is x:
            gram, tokens = self._last[1], self._last[2]
        else:
            gram, tokens = self._gram(x)
            self._last = (x, gram, tokens)
        if name in self.sums:
            self.sums[name].add_(gram)  # in place: a new (in, in) float64 tensor per layer and batch otherwise
        else:
            self.sums[name] = gram.clone()
        self.counts[name] = self.counts.get(name, 0) + tokens

    def _gram(self, x: Tensor) -> tuple[Tensor, int]:
        x = x.detach()
        if self.mask is not None and x.dim() == 3 and x.shape[:2] == self.mask.shape:
            x = x[self.mask.bool()]  # (tokens, in): padding would pull the Gram towards pad embeddings
        x = x.reshape(-1, x.shape[-1]).float()
        # one batch's product in float32 (a few thousand tokens: as exact as the float32 Gram that is stored, and
        # several times faster than float64 here), summed over batches in float64, where many batches would lose
        return (x.T @ x).double(), x.shape[0]

    @contextmanager
    def hooked(self):
        handles = [layer.register_forward_hook(lambda m, args, out, name=name: self._record(name, args[0]))
                   for name, layer in self.layers.items()]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def run(self, model: nn.Module, forward: Forward, inputs: dict) -> None:
        self.mask = inputs.get("mask")
        try:
            with torch.no_grad():
                forward(model, inputs)
        finally:
            self._last = None  # the batch's activations go with it

    def grams(self) -> dict[str, Tensor]:
        """(in, in) float32 mean Gram per weight name, for the layers that saw at least one token."""
        return {name: (total / self.counts[name]).float() for name, total in self.sums.items()}


def gram_statistics(model: nn.Module, batches: Iterable[dict], forward: Forward) -> dict[str, Tensor]:
    """RegMean's statistics of `model` on `batches`: every linear layer's mean input Gram, by weight name."""
    accumulator = GramAccumulator(linear_weights(model))
    with accumulator.hooked():
        for inputs in batches:
            accumulator.run(model, forward, inputs)
    return accumulator.grams()


def fisher_statistics(model: nn.Module, examples: Iterable[tuple[dict, Tensor]], log_likelihood: LogLikelihood,
                      progress: Callable[[int], None] | None = None) -> tuple[dict[str, Tensor], int]:
    """The diagonal empirical Fisher of `model`'s trainable parameters and the number of examples it averages.

    One backward pass per example: the Fisher is a mean of per-example squared gradients, which a batch's summed
    gradient (squared) would not give. A `log_likelihood` that returns a vector gives one backward pass per entry,
    their squares summed into the item's (one forward pass, its graph kept until the last). Parameters no example
    reached (an unused pooler) are left out, and a merge then averages them.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    sums: dict[str, Tensor] = {}
    count = 0
    was_training = model.training
    model.eval()  # dropout off: the Fisher of the model as it predicts
    with _sparse_embedding_gradients(model, params):
        try:
            for inputs, labels in examples:
                terms = log_likelihood(model, inputs, labels).reshape(-1)
                for i, term in enumerate(terms):
                    model.zero_grad(set_to_none=True)
                    term.backward(retain_graph=i < len(terms) - 1)
                    for name, p in params.items():
                        if p.grad is not None:
                            _add_squares(sums, name, p.grad)
                count += 1
                if progress:
                    progress(count)
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
    return {name: total / max(count, 1) for name, total in sums.items()}, count


def _add_squares(sums: dict[str, Tensor], name: str, grad: Tensor) -> None:
    if name not in sums:
        sums[name] = torch.zeros(grad.shape, dtype=torch.float32)
    if grad.is_sparse:  # an embedding's: only the rows the example looked up, each row's lookups summed
        grad = grad.coalesce()
        values = grad.values().float()
        sums[name].index_add_(0, grad.indices()[0], values * values)
    else:
        grad = grad.detach().float()
        sums[name].addcmul_(grad, grad)


@contextmanager
def _sparse_embedding_gradients(model: nn.Module, params: dict[str, nn.Parameter]):
    """Embeddings give sparse gradients while the Fisher is gathered: a dense one is a vocabulary-sized tensor per
    example, zero outside the few rows the example looked up (a MiniLM expert's Fisher over 300 examples took 8.1 s
    with dense ones here, 5.1 s with sparse). Tied weights (an embedding that is also the output layer) stay dense:
    their other use's gradient is dense."""
    holders: dict[int, int] = {}
    for m in model.modules():
        for p in m.parameters(recurse=False):
            holders[id(p)] = holders.get(id(p), 0) + 1
    switched = [m for n, m in model.named_modules() if isinstance(m, nn.Embedding) and not m.sparse
                and f"{n}.weight" in params and holders[id(m.weight)] == 1]
    for m in switched:
        m.sparse = True
    try:
        yield
    finally:
        for m in switched:
            m.sparse = False


def normalized_fisher(fisher: dict[str, Tensor]) -> tuple[dict[str, Tensor], float]:
    """The Fisher scaled to unit L2 norm over all its entries, and that norm: models whose data fit them better
    have smaller gradients everywhere, and unnormalised they would count for less (FusionBench normalises too)."""
    norm = float(torch.sqrt(sum((f.double() ** 2).sum() for f in fisher.values())))
    scale = 1.0 / norm if norm > 0 else 1.0
    return {name: f * scale for name, f in fisher.items()}, norm
