"""Slices built from stored tensors check their inputs for NaN/Inf once, in the first pass over every slice."""
import pytest
import torch

from taskfuse.ops.slices import Slices


class Poisoned(Exception):
    pass


def stored_with_nan_in_last_slice():
    a = torch.randn(1000).bfloat16()
    b = torch.randn(1000).bfloat16()
    b[997] = float("nan")  # the last slice of size 100
    return a, b


def slices_of(a, b, calls):
    def on_nonfinite():
        calls.append(1)
        raise Poisoned

    stored = Slices.of_stored([a, b], None, on_nonfinite=on_nonfinite)
    return Slices(2, a.numel(), stored.read_unchecked, size=100, checks=stored.checks.__class__(on_nonfinite))


def test_first_pass_checks_every_slice_and_raises():
    calls = []
    slices = slices_of(*stored_with_nan_in_last_slice(), calls)
    with pytest.raises(Poisoned):
        slices.map(lambda chunk, sl: chunk.sum())
    assert calls == [1]


def test_gram_checks_its_total_once():
    calls = []
    slices = slices_of(*stored_with_nan_in_last_slice(), calls)
    with pytest.raises(Poisoned):
        slices.gram()
    assert calls == [1]


def test_passes_after_a_checked_pass_do_not_check_again():
    # overflowing finite values flag every slice of the first pass (the exact check then clears them), none later
    big = torch.full((1 << 20,), 3e38).bfloat16()
    flagged = []
    slices = Slices.of_stored([big, big], None, on_nonfinite=lambda: flagged.append(1))
    slices.map(lambda chunk, sl: None)
    first = len(flagged)
    slices.map(lambda chunk, sl: None)
    slices.gram()
    assert first == len(slices.slices) > 1 and len(flagged) == first


def test_a_sample_pass_does_not_count_as_checked():
    big = torch.full((1 << 20,), 3e38).bfloat16()
    flagged = []
    slices = Slices.of_stored([big, big], None, on_nonfinite=lambda: flagged.append(1))
    sample = slices.every(2)
    sample.map(lambda chunk, sl: None)
    assert not slices.checks.done
    slices.map(lambda chunk, sl: None)
    assert slices.checks.done


def test_base_of_reuses_the_slice_this_thread_read_and_converts_otherwise():
    base = torch.randn(1 << 19).bfloat16()
    tune = torch.randn(1 << 19).bfloat16()
    slices = Slices.of_stored([tune], base)
    first, second = slices.slices[:2]
    chunk = slices.read(first)
    reused = slices.base_of(first)
    assert torch.equal(chunk[0] + reused, tune[first].float() - base[first].float() + base[first].float())
    assert slices.base_of(first) is reused  # no second conversion
    converted = slices.base_of(second)  # never read on this thread
    assert converted is not reused and torch.equal(converted, base[second].float())
    with pytest.raises(ValueError, match="base"):
        Slices.of_stored([tune], None).base_of(first)
