"""Every registered method runs through the public conformance kit, one test per (method, check)."""
import pytest

from taskfuse.methods import all_methods
from taskfuse.testing.conformance import CHECKS, applicable

CASES = [(m.name, check) for m in all_methods() for check in applicable(m)]


def test_every_method_is_enrolled():
    assert len(all_methods()) >= 17
    assert {m.name for m in all_methods()} >= {
        "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs", "breadcrumbs_ties",
        "della", "della_linear", "slerp", "model_stock", "karcher", "passthrough", "consensus", "tsv", "iso_c",
        "iso_cts"}


@pytest.mark.parametrize("method,check", CASES, ids=[f"{m}-{c}" for m, c in CASES])
def test_conformance(method, check):
    from taskfuse.methods import get_method

    CHECKS[check][0](get_method(method))
