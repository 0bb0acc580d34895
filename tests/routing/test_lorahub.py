"""LoraHub's gradient-free weight search (CMA-ES from `cma`): budget, bounds, penalty, start never lost."""
import numpy as np
import pytest

from taskfuse.routing.lorahub import LoraHubSearch, search_weights


def test_it_finds_the_bottom_of_a_bowl_within_budget_and_bounds():
    target = [0.8, -0.4, 0.0, 1.2]
    calls = []

    def loss(w):
        calls.append(w)
        return sum((a - b) ** 2 for a, b in zip(w, target))

    state = np.random.get_state()
    found = search_weights(loss, 4, LoraHubSearch(budget=200, l1=0.0))
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # numpy's global generator untouched
    assert len(calls) == found.evaluations <= 200
    assert all(abs(v) <= 1.5 for w in calls for v in w)
    assert found.objective < 0.01 and found.objective_at_start == pytest.approx(sum(t * t for t in target))
    assert found.history == sorted(found.history, reverse=True)


def test_the_l1_penalty_keeps_useless_adapters_at_zero_and_a_loss_flat_at_zero_is_kept():
    flat = search_weights(lambda w: 1.0, 3, LoraHubSearch(budget=30, l1=0.05))
    assert flat.weights == [0.0, 0.0, 0.0] and flat.objective == 1.0
    same = search_weights(lambda w: (w[0] - 1) ** 2, 2, LoraHubSearch(budget=30, seed=4))
    again = search_weights(lambda w: (w[0] - 1) ** 2, 2, LoraHubSearch(budget=30, seed=4))
    assert same.weights == again.weights  # seeded

