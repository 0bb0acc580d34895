"""How much of each task's exclusive part θ_t − θ* Twin-Merging's rank keeps, for two shared merges θ*.

Twin-Merging (bench/routing_rows.py) stores each expert's difference to the shared merge as its best rank-r
approximation on every linear weight. This prints, per shared merge, the share of those differences' energy
(squared Frobenius norm, summed over the linear weights and the tasks) that rank r keeps. It explains why the
routing study keeps task arithmetic as the shared expert (docs/adapters.md): Iso-CTS equalises the singular values
of its update, so what is left of each expert beside it is far from low rank.

    python benchmarks/twin_exclusive_rank.py            # full zoo, rank 32: a minute or two once the zoo is cached
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from taskfuse.bench.merging import merge_zoo
from taskfuse.bench.routing_rows import TWIN_RANK, full_states
from taskfuse.eval.encoder import load_encoder
from taskfuse.zoo.build import build_zoo
from taskfuse.zoo.recipe import variant_named

SHARED = {"task_arithmetic": {"scale": 0.3}, "iso_cts": {"scale": 4.0}}  # each at the scale bench-full chose


def kept_share(shared: dict, experts: dict[str, dict], linear: list[str], rank: int) -> float:
    kept = total = 0.0
    for name in linear:
        for state in experts.values():
            energy = torch.linalg.svdvals(state[name].float() - shared[name].float()) ** 2
            kept, total = kept + float(energy[:rank].sum()), total + float(energy.sum())
    return kept / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="full")
    parser.add_argument("--rank", type=int, default=TWIN_RANK)
    args = parser.parse_args()
    zoo = build_zoo(variant_named(args.variant))
    _, experts, linear = full_states(zoo)
    for method, params in SHARED.items():
        with tempfile.TemporaryDirectory(prefix="taskfuse-twin-rank-") as work:
            merge_zoo(zoo, method, params, Path(work) / "shared", seed=zoo.variant.recipe.seed)
            shared = load_encoder(Path(work) / "shared").state_dict()
        print(f"{method} {params}: rank {args.rank} keeps {100 * kept_share(shared, experts, linear, args.rank):.1f} % "
              "of the exclusive parts' energy", flush=True)


if __name__ == "__main__":
    main()
