"""Registered merge methods. Each is a pure function `fn(Inputs, Params) -> Tensor`.

    >>> from taskfuse.methods import ties, Ties, Inputs
    >>> merged_delta = ties(Inputs.of(deltas, weights), Ties(density=0.2))
"""
from .arcee_fusion import ArceeFusion, arcee_fusion
from .breadcrumbs import Breadcrumbs, BreadcrumbsTies, breadcrumbs, breadcrumbs_ties
from .consensus import Consensus, consensus
from .dare import Dare, DareTies, dare_linear, dare_ties
from .della import Della, DellaLinear, della, della_linear
from .fisher import Fisher, fisher
from .inputs import Inputs
from .iso import IsoC, IsoCts, iso_c, iso_cts
from .karcher import Karcher, karcher
from .knots import Knots, knots
from .linear import Linear, linear
from .magmax import MagMax, magmax
from .model_stock import ModelStock, model_stock
from .multislerp import MultiSlerp, multislerp, multislerp_task_vectors
from .nearswap import NearSwap, nearswap
from .nuslerp import NuSlerp, nuslerp, nuslerp_task_vectors
from .partitioned import PartitionedTaskArithmetic, partitioned_task_arithmetic
from .passthrough import Passthrough, passthrough
from .ram import Ram, ram
from .regmean import Regmean, regmean
from .registry import MethodInfo, all_methods, get_method, method
from .sce import Sce, sce
from .self_positioning import SelfPositioning, self_positioning
from .slerp import Slerp, slerp
from .task_arithmetic import TaskArithmetic, task_arithmetic
from .ties import Ties, ties
from .tsv import Tsv, tsv
from .wudi import Wudi, wudi

__all__ = [name for name in dir() if not name.startswith("_")]
