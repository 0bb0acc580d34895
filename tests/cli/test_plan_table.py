"""`taskfuse plan`'s table: a row per tensor name up to its layer number, where the rest agrees."""
from rich.console import Console

from taskfuse import plan
from taskfuse.cli.plan_table import plan_table, spans


def rendered(spec: dict) -> str:
    console = Console(width=400, record=True)
    console.print(plan_table(plan(spec)))
    return console.export_text()


def test_layers_that_share_everything_share_a_row_and_every_tensor_is_named(llama_family):
    base, tunes = llama_family
    spec = {"method": "ties", "base": str(base), "models": [{"path": str(t)} for t in tunes]}
    text = rendered(spec)
    assert "model.layers.{0-2}.mlp.down_proj.weight" in text and "model.layers.1.mlp" not in text
    assert "model.embed_tokens.weight" in text and "lm_head.weight" in text
    rows = [line for line in text.splitlines() if "weight" in line]
    assert len(rows) < len(plan(spec).jobs)


def test_a_layer_whose_parameters_or_weights_differ_has_its_own_row(llama_family):
    base, tunes = llama_family
    text = rendered({"method": "task_arithmetic", "base": str(base), "params": {"scale": [0.2, 0.6]},
                     "models": [{"path": str(tunes[0])}, {"path": str(tunes[1])}],
                     "overrides": [{"tensors": "model.layers.2.*", "weights": [0.5, 0.25]}]})
    assert "model.layers.0.mlp.down_proj.weight" in text and "model.layers.1.mlp.down_proj.weight" in text
    assert "scale=0.4" in text  # the schedule at the middle layer
    layer2 = next(line for line in text.splitlines() if "model.layers.2.mlp.down_proj.weight" in line)
    assert "0.5, 0.25" in layer2


def test_spans():
    assert spans([0, 1, 2, 3, 5, 7, 8, 9]) == "0-3, 5, 7-9"
    assert spans([4]) == "4" and spans([2, 0, 1]) == "0-2"
