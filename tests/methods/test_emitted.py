"""SLERP writes the linear result during its Gram pass, and keeps it only when the angle says linear."""
import math

import pytest
import torch

from taskfuse import merge
from taskfuse.methods.inputs import Inputs
from taskfuse.methods.slerp import Slerp, slerp
from taskfuse.methods.sliced import ALL_EMITTED, SliceInputs
from tests.conftest import spec_for
from tests.execute.test_streaming_oracle import load_dir


def pair(cosine_gap: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(4)
    a = torch.randn(3000, generator=g)
    return torch.stack([a, a + cosine_gap * torch.randn(3000, generator=g)])


def prepared(stack: torch.Tensor, t: float, offered: bool):
    emitted = torch.full((stack.shape[1],), float("nan"))

    def emit(result, sl, bound=math.inf):
        # the bound lets the executor skip its overflow check: it must hold for the inputs and the result
        assert stack[:, sl].abs().max() <= bound and result.abs().max() <= bound
        emitted[sl] = result

    x = SliceInputs.of(Inputs.of(stack), emit if offered else None)
    return slerp.prepare(x, Slerp(t=t)), emitted


def test_nearly_colinear_tensors_are_merged_in_the_gram_pass():
    stack = pair(1e-3)  # cosine ~ 1 - 5e-7, inside mergekit's 0.9995
    merge_chunk, emitted = prepared(stack, 0.3, offered=True)
    assert merge_chunk is ALL_EMITTED
    torch.testing.assert_close(emitted, torch.lerp(stack[0], stack[1], 0.3), rtol=0, atol=0)
    plain, _ = prepared(stack, 0.3, offered=False)  # the two-pass form gives the same
    torch.testing.assert_close(plain(stack.clone(), slice(0, 3000)), emitted, rtol=0, atol=0)
    torch.testing.assert_close(slerp(Inputs.of(stack), Slerp(t=0.3)), emitted, rtol=0, atol=0)


def test_an_angle_outside_the_threshold_overwrites_the_emitted_result():
    stack = pair(1.0)  # cosine ~ 0.7
    merge_chunk, emitted = prepared(stack, 0.3, offered=True)
    assert merge_chunk is not ALL_EMITTED
    merged = merge_chunk(stack.clone(), slice(0, 3000))
    assert not torch.allclose(merged, emitted)  # the linear guess was wrong and is replaced
    a, b = stack.double()
    theta = torch.arccos(a @ b / (a.norm() * b.norm()))
    spherical = (torch.sin(0.7 * theta) * a + torch.sin(0.3 * theta) * b) / torch.sin(theta)
    torch.testing.assert_close(merged.double(), spherical, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_streamed_slerp_takes_both_paths_and_equals_in_memory(tmp_path, llama_family, threads):
    # in the tiny family, norm weights are colinear within the threshold (emitted), matrices are not (two passes)
    _, tunes = llama_family
    spec = {"method": "slerp", "models": [{"path": str(t)} for t in tunes[:2]], "params": {"t": 0.3}}
    got = load_dir(merge(spec, tmp_path / "o", threads=threads).out)
    a, b = load_dir(tunes[0]), load_dir(tunes[1])
    for name, merged in got.items():
        want = slerp(Inputs.of([a[name].float(), b[name].float()]), Slerp(t=0.3)).to(merged.dtype)
        torch.testing.assert_close(merged, want, rtol=0, atol=0, msg=name)
