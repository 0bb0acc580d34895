"""The loop with its step chosen: both steps learn the same coefficients; bad input is refused by name."""
import pytest
import torch

from taskfuse.programs.learn import DivergedError, Recipe
from taskfuse.programs.learning_loop import DEFAULT_STEP, STEPS, learn_coefficients
from taskfuse.programs.merge_view import MergeView, Parameterization
from taskfuse.programs.slerp_view import SlerpView
from tests.programs.test_recomputed_step import family, tasks_for


def learned(view, tasks, recipe: Recipe, step: str) -> tuple[list[float], list[torch.Tensor]]:
    losses = learn_coefficients(view, tasks, recipe, step=step)
    return losses, [p.detach().clone() for p in view.parameters() if p.requires_grad]


@pytest.mark.parametrize("make, recipe", [
    (lambda base, vectors: MergeView(base, vectors, Parameterization("layer"), init=0.3).double(), Recipe(steps=4, lr=0.05)),
    (lambda base, vectors: SlerpView(base, vectors, scale=1.0).double(),
     Recipe("cross_entropy", 4, 0.05, "adam", None, scale_penalty=0.5))])
def test_both_steps_learn_the_same_coefficients(make, recipe):
    base, vectors = family("bert")
    tasks = tasks_for(base.config.hidden_size, len(vectors), recipe.objective != "entropy")
    lean, fused = (learned(make(base, vectors), tasks, recipe, step) for step in ("recomputed", "merged-once"))
    assert lean[0] == pytest.approx(fused[0], rel=1e-9) and lean[0][-1] != lean[0][0]
    for a, b in zip(lean[1], fused[1]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert DEFAULT_STEP == "recomputed" and set(STEPS) == {"recomputed", "merged-once"}


def test_an_unknown_step_and_a_diverging_loss_are_refused():
    base, vectors = family("bert", tasks=2)
    view = MergeView(base, vectors, Parameterization("task"), init=0.3).double()
    tasks = tasks_for(base.config.hidden_size, 2, labelled=True)
    with pytest.raises(ValueError, match="unknown gradient step 'fast'.*recomputed, merged-once"):
        learn_coefficients(view, tasks, Recipe("cross_entropy", 1), step="fast")
    with pytest.raises(DivergedError, match="diverged at step 1 of 3.*lower the learning rate"):
        learn_coefficients(view, tasks, Recipe("cross_entropy", 3, lr=float("inf"), clamp=None))
