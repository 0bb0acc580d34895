"""Tail averaging around the real learning loop: the written coefficients are the mean of the loop's own last
iterates (clamped ones where the recipe clamps), the loop's losses and last iterate are untouched."""
import pytest
import torch

from taskfuse.errors import UsageError
from taskfuse.programs.learn import Recipe
from taskfuse.programs.learning_loop import learn_coefficients
from taskfuse.programs.merge_view import MergeView, Parameterization
from taskfuse.programs.tail_average import tail_averaged
from tests.programs.test_recomputed_step import family, tasks_for

# AdaMerging's recipe with a rate large enough that the clamp to [0, 1] acts during the averaged steps
CLAMPED = Recipe("entropy", 6, 0.3, "adam", (0.0, 1.0))


def view_and_tasks():
    base, vectors = family("bert")
    view = MergeView(base, vectors, Parameterization("layer"), init=0.3).double()
    return view, tasks_for(base.config.hidden_size, len(vectors), labelled=False)


def iterates(view, tasks, recipe: Recipe) -> tuple[list[float], list[list[torch.Tensor]]]:
    """The loop's losses and, after each step, its trainable tensors as the loop left them."""
    seen = []
    params = [p for p in view.parameters() if p.requires_grad]
    losses = learn_coefficients(view, tasks, recipe, lambda *_: seen.append([p.detach().clone() for p in params]))
    return losses, seen


@pytest.mark.parametrize("fraction, averaged", [(0.5, 3), (0.4, 3), (1.0, 6), (0.01, 1)])
def test_the_coefficients_are_the_mean_of_the_loops_last_iterates(fraction, averaged):
    plain_losses, seen = iterates(*view_and_tasks(), CLAMPED)
    assert any(bool((s[0] == 1.0).any() | (s[0] == 0.0).any()) for s in seen[-averaged:]), "the clamp never acted"
    view, tasks = view_and_tasks()
    reported = []
    with tail_averaged(CLAMPED.steps, fraction) as average:
        losses = learn_coefficients(view, tasks, CLAMPED, average.progress(lambda *a: reported.append(a)))
    assert losses == plain_losses and len(reported) == CLAMPED.steps  # the loop itself is untouched
    params = [p for p in view.parameters() if p.requires_grad]
    for i, p in enumerate(params):
        torch.testing.assert_close(p.detach(), torch.stack([s[i] for s in seen[-averaged:]]).mean(0), rtol=1e-12,
                                   atol=1e-15)
        assert torch.equal(average.last[i], seen[-1][i])
    assert average.describe() == {"fraction": fraction, "steps_averaged": averaged,
                                  "from_step": CLAMPED.steps - averaged + 1, "of_steps": CLAMPED.steps}


def test_a_fraction_outside_0_1_is_refused_and_a_loop_it_was_not_set_up_for_fails_loudly():
    for fraction in (0.0, -0.5, 1.5):
        with pytest.raises(UsageError, match=r"--average-tail .*in \(0, 1\]"):
            with tail_averaged(10, fraction):
                pass
    view, tasks = view_and_tasks()
    with pytest.raises(RuntimeError, match="set up for 4 steps of a loop that has 6"):
        with tail_averaged(4, 0.5) as average:
            learn_coefficients(view, tasks, CLAMPED, average.progress())
    with pytest.raises(RuntimeError, match="did not report its last step"):
        with tail_averaged(CLAMPED.steps, 0.5):
            learn_coefficients(view, tasks, CLAMPED)  # its progress not wrapped: nothing averaged, said so
