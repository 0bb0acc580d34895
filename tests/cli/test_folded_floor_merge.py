"""A fisher merge of statistics with FusionBench's floor folded in: merged as FusionBench weighs the models when the
spec's own floor is negligible, refused (typed, nothing written) when it would add a second floor or mix folded with
unfolded statistics. Real statistics of two tiny causal LMs, gathered by the installed script."""
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from taskfuse.io.statistics_file import TENSORS
from taskfuse.programs.fisher_floor import NEGLIGIBLE_FLOOR, fold_floor
from tests.cli.test_user_errors import assert_user_error, taskfuse, write_spec

NAME = "model.layers.0.mlp.down_proj.weight"


@pytest.fixture(scope="module")
def statistics(lms, tmp_path_factory):
    """Each tune's unit-norm Fisher, and the same folded at floors 1e-3 and 1e-4."""
    base, tunes, data = lms
    root = tmp_path_factory.mktemp("folded")
    plain = []
    for i, (tune, jsonl) in enumerate(zip(tunes, data)):
        done = taskfuse("statistics", tune, "--kind", "fisher", "--data", jsonl, "-o", root / f"plain{i}")
        assert done.returncode == 0, done.stderr
        plain.append(root / f"plain{i}")
    folded = {floor: [fold_floor(p, floor, root / f"folded{floor:g}-{i}") for i, p in enumerate(plain)]
              for floor in (1e-3, 1e-4)}
    return tunes, plain, folded


def merge(tmp_path, tunes, folders, **params):
    spec = write_spec(tmp_path, {"method": "fisher", "params": params,
                                 "models": [{"path": str(t), "statistics": str(f)} for t, f in zip(tunes, folders)]})
    return taskfuse("merge", spec, "-o", tmp_path / "merged")


def test_folded_statistics_merge_with_a_negligible_floor_as_fusionbench_weighs(tmp_path, statistics):
    tunes, _, folded = statistics
    done = merge(tmp_path, tunes, folded[1e-3], floor=NEGLIGIBLE_FLOOR)
    assert done.returncode == 0, done.stderr
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").state_dict()[NAME]
    weights = [load_file(f / TENSORS)[NAME] for f in folded[1e-3]]
    values = [AutoModelForCausalLM.from_pretrained(t).state_dict()[NAME] for t in tunes]
    expected = sum(w * v for w, v in zip(weights, values)) / sum(weights)
    torch.testing.assert_close(merged, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["default floor", "floor given", "mixed", "two floors"])
def test_a_second_floor_or_mixed_statistics_are_refused_before_anything_is_written(tmp_path, statistics, case):
    tunes, plain, folded = statistics
    if case == "default floor":  # the method's own 1e-6, which the user never wrote
        done, said = merge(tmp_path, tunes, folded[1e-3]), ["already folded in", "method's default", "floor: 1e-30"]
    elif case == "floor given":
        done, said = merge(tmp_path, tunes, folded[1e-3], floor=1e-8), ["floor of 1e-08", "floor: 1e-30"]
    elif case == "mixed":
        done = merge(tmp_path, tunes, [folded[1e-3][0], plain[1]], floor=NEGLIGIBLE_FLOOR)
        said = [f"model {str(tunes[1])!r}", "no floor folded in", "--floor-before-scaling"]
    else:
        done = merge(tmp_path, tunes, [folded[1e-3][0], folded[1e-4][1]], floor=NEGLIGIBLE_FLOOR)
        said = ["different floors folded in (0.0001, 0.001)", "same --floor-before-scaling"]
    assert_user_error(done, "SpecError", *said)
    assert not (tmp_path / "merged").exists()


def test_unfolded_statistics_keep_the_methods_floor(tmp_path, statistics):
    """The check only concerns folded statistics: a plain fisher merge at the method's default still runs."""
    tunes, plain, _ = statistics
    assert merge(tmp_path, tunes, plain).returncode == 0
