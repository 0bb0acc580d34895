"""`taskfuse route arrow`: a routed model written from a library of adapters and loaded back as a torch module."""
import torch

from taskfuse.routing.arrow import ArrowRouter
from taskfuse.routing.library import LoraLibrary
from taskfuse.routing.modules import route
from taskfuse.routing.store import load_routed
from tests.cli.test_user_errors import assert_user_error, taskfuse
from tests.routing.test_arrow import library_dirs  # noqa: F401  (the fixture)


def test_route_writes_a_model_that_loads_and_routes_as_in_memory(tmp_path, library_dirs):
    from transformers import AutoModelForCausalLM
    base, adapters = library_dirs
    done = taskfuse("route", "arrow", "--base", base, "--adapter", f"math={adapters[0]}", "--adapter", adapters[1],
                    "--top-k", "1", "-o", tmp_path / "routed")
    assert done.returncode == 0, done.stderr
    assert "Arrow over 2 adapters (math, a1)" in " ".join(done.stderr.split())
    library = LoraLibrary.from_adapters(base, {"math": adapters[0], "a1": adapters[1]})
    expected = route(AutoModelForCausalLM.from_pretrained(base).eval(), library,
                     lambda name, updates, module: ArrowRouter.for_updates(updates, module.in_features, 1))
    ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(load_routed(tmp_path / "routed")(input_ids=ids).logits,
                                   expected(input_ids=ids).logits, rtol=0, atol=0)


def test_route_refuses_what_it_cannot_build(tmp_path, library_dirs, bert_family):
    base, adapters = library_dirs
    assert_user_error(taskfuse("route", "twin", "--base", base, "--adapter", adapters[0], "-o", tmp_path / "x"),
                      "builds arrow")
    assert_user_error(taskfuse("route", "arrow", "--base", bert_family[0], "--adapter", adapters[0],
                               "-o", tmp_path / "x"), "AdapterError", "has no weight")
    assert not (tmp_path / "x").exists()
