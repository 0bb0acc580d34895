"""Reference conformance against mergekit: the same mergekit YAML run by mergekit (fixtures generated in its own
virtual environment by scripts/make_mergekit_fixtures.py; versions in tests/fixtures/mergekit/versions.json) and by
taskfuse, on the same float32 checkpoints."""
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from taskfuse import merge
from taskfuse.testing.checkpoints import checkpoints_from_tagged

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mergekit"
METHODS = sorted(p.stem for p in FIXTURES.glob("*.yaml"))
# karcher iterates to a tolerance; everything else is the same arithmetic in float32
TOLERANCE = {"karcher": 1e-4}


def test_fixtures_present_and_versioned():
    assert len(METHODS) >= 8, "run scripts/make_mergekit_fixtures.py"
    assert json.loads((FIXTURES / "versions.json").read_text())["mergekit"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    paths = checkpoints_from_tagged(load_file(FIXTURES / "inputs.safetensors"), FIXTURES / "config.json",
                                    tmp_path_factory.mktemp("mk_inputs"))
    return {"@" + tag: str(path) for tag, path in paths.items()}


@pytest.mark.parametrize("method", METHODS)
def test_matches_mergekit(tmp_path, checkpoints, method):
    text = (FIXTURES / f"{method}.yaml").read_text()
    for tag, path in checkpoints.items():
        text = text.replace(tag, path)
    out = merge(yaml.safe_load(text), tmp_path / "out").out
    ours, theirs = load_file(out / "model.safetensors"), load_file(FIXTURES / f"{method}.safetensors")
    assert ours.keys() == theirs.keys()
    tol = TOLERANCE.get(method, 1e-6)
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], atol=tol, rtol=tol, msg=f"{method}: {name}")


@pytest.mark.parametrize("name", sorted(p.stem for p in (FIXTURES / "moe").glob("*.yaml")))
def test_moe_matches_mergekit_moe_but_for_the_routers(tmp_path, checkpoints, name):
    """The same mergekit-moe config through `taskfuse moe`'s reader: every tensor of the MoE equal to mergekit's, in
    the naming of the transformers that loads it, except the routers (initialised differently by design)."""
    from transformers import AutoModelForCausalLM

    from taskfuse.programs.moe import upcycle
    from taskfuse.programs.moe_source import read_moe_spec

    text = (FIXTURES / "moe" / f"{name}.yaml").read_text()
    for tag, path in checkpoints.items():
        text = text.replace(tag, path)
    (tmp_path / "moe.yaml").write_text(text)
    upcycle(read_moe_spec(tmp_path / "moe.yaml"), tmp_path / "out")
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    theirs = load_file(FIXTURES / "moe" / f"{name}.safetensors")
    routers = {k for k in ours if k.endswith(".mlp.gate.weight")}
    assert routers and ours.keys() - routers == theirs.keys()
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), f"{name}: {key}"
