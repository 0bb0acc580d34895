"""A learned method over the zoo's task vectors as a registered delta method pre-processes them (`taskfuse learn
--sparsify`), and the merge that replays it: that method with the learned weights (programs/sparsified_vectors.py).
"""
from __future__ import annotations

import time
from pathlib import Path

from .. import api
from ..errors import UsageError
from ..eval.encoder import load_encoder
from ..programs.learn import LearnProgress
from ..programs.learned_spec import learned_spec
from ..programs.learning_loop import DEFAULT_STEP
from ..programs.lazy_task_vectors import FileTaskVector
from ..programs.merge_view import MergeView
from ..programs.sparsified_vectors import check_sparsifier, sparsified_spec, sparsified_vectors
from ..zoo.build import Zoo
from .learned import LearnedMethod, LearnedResult
from .learned_row import TENSOR_RULES
from .view_learning import learn_built_view


def check_sparsifiable(method: LearnedMethod, sparsify: str, params: dict) -> None:
    """Before anything is built: the learned method takes plain weights over plain vectors, the sparsifier exists."""
    if method.interpolation != "linear" or method.ties_density is not None or \
            method.parameterization.kind == "partition":
        raise UsageError(f"--sparsify {sparsify}: {method.name} learns SLERP weights, over TIES-trimmed vectors or per "
                         "partition, which a pre-processed merge cannot replay. Fix: use adamerging_task, "
                         "adamerging_layer, atlas or atlas_fewshot.")
    check_sparsifier(sparsify, params)


def sparsify_record(sparsify: tuple[str, dict]) -> dict:
    """What taskfuse_learned.json says of the pre-processing the coefficients were learned over."""
    method, params = sparsify
    return {"method": method, "params": params}


def learn_sparsified_on_zoo(zoo: Zoo, method: LearnedMethod, sparsify: tuple[str, dict],
                            progress: LearnProgress | None = None, step: str = DEFAULT_STEP) -> LearnedResult:
    """bench/learned.py's learn_on_zoo over the pre-processed vectors (drawn with the zoo's seed, which the written
    spec's merge uses)."""
    def build() -> MergeView:
        base = load_encoder(zoo.base_dir)
        theta0 = base.state_dict()
        vectors = sparsified_vectors([FileTaskVector(e.model_dir, theta0) for e in zoo.experts.values()],
                                     *sparsify, seed=zoo.variant.recipe.seed, bases=theta0)
        return MergeView(base, vectors, method.parameterization, method.init)
    return learn_built_view(zoo, method, build, progress, step)


def write_sparsified(zoo: Zoo, result: LearnedResult, sparsify: tuple[str, dict], out: Path,
                     extra_files: dict[str, bytes] | None = None) -> tuple[dict, float]:
    """Write the merge through the engine: the sparsifying method with the learned weights."""
    spec = sparsified_spec(learned_spec(result.view, str(zoo.base_dir),
                                        [str(e.model_dir) for e in zoo.experts.values()],
                                        seed=zoo.variant.recipe.seed, dtype="float32", tensor_rules=TENSOR_RULES),
                           *sparsify)
    started = time.perf_counter()
    api.merge(spec, out, threads=None, extra_files=extra_files)
    return spec, time.perf_counter() - started
