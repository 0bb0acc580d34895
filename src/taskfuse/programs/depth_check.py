"""A spec written for a known depth (a mergekit config whose merged slices name layer ranges, spec `depth`) must
meet models of that depth.

taskfuse merges layer i of every model into layer i of the output, so a mergekit config's slices translate into
per-layer parameters only when they run from layer 0 through the models' last layer. mergekit itself writes a model
with as many layers as the slices cover: slices ending at layer 24 of 32-layer models give a 24-layer model. Merging
all 32 with the per-layer parameters of the first 24 would write a model the config never described, silently; so
the plan's depth is checked against the spec's before anything is written.
"""
from __future__ import annotations

from ..errors import IncompatibleInputsError
from ..plan.plan import Plan
from ..plan.schedule import layer_index
from ..spec.model import MergeSpec


def plan_depth(the_plan: Plan) -> int:
    """The number of layers among the plan's output tensors (0 for a model without a layer stack)."""
    indices = [layer_index(job.name) for job in the_plan.jobs]
    return max((i for i in indices if i is not None), default=-1) + 1


def check_depth(spec: MergeSpec, the_plan: Plan) -> None:
    if spec.depth is None or spec.slices:
        return
    found = plan_depth(the_plan)
    if found != spec.depth:
        models = ", ".join(m.path for m in spec.models)
        raise IncompatibleInputsError(
            f"the spec's slices cover layers 0-{spec.depth - 1} ({spec.depth} layers), but the models ({models}) "
            f"have {found}. taskfuse merges layer i of every model into layer i of the output, so merged slices "
            "must run from layer 0 through the models' last layer. Fix: end the last slice's layer_range at "
            f"{found}, or merge whole models and then stack or drop layers with a passthrough merge of single-source "
            "slices.")
