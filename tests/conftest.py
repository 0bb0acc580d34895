import shutil

import pytest
import torch
from transformers.utils import logging as hf_logging

from taskfuse.testing.checkpoints import build_family

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()


@pytest.fixture(scope="session")
def llama_family(tmp_path_factory):
    """Tiny Llama base + 3 fine-tunes, bf16, sharded safetensors with an index (as the hub ships them)."""
    return build_family(tmp_path_factory.mktemp("llama"), "llama", 3, torch.bfloat16, max_shard_size="150KB")


@pytest.fixture(scope="session")
def bert_family(tmp_path_factory):
    """Tiny BERT base + 2 fine-tunes, float32, single model.safetensors."""
    return build_family(tmp_path_factory.mktemp("bert"), "bert", 2, torch.float32)


@pytest.fixture(scope="session")
def moe_family(tmp_path_factory):
    """A tiny Llama base with its tokenizer and 3 fine-tunes of it (seeded perturbations), for MoE upcycling."""
    from taskfuse.testing.checkpoints import perturb
    from taskfuse.testing.tiny_llm import save_tiny_causal_lm, tiny_causal_lm

    root = tmp_path_factory.mktemp("moe")
    base = save_tiny_causal_lm(root / "base", "llama", seed=0, tie=False)
    experts = []
    for i in range(3):
        model = perturb(tiny_causal_lm("llama", 384, seed=0, tie=False), seed=10 + i, scale=0.05)
        model.save_pretrained(root / f"expert{i}")
        experts.append(root / f"expert{i}")
    return base, experts


@pytest.fixture
def family_copy(tmp_path, llama_family):
    """A writable copy of the Llama family, for tests that damage checkpoints."""
    base, tunes = llama_family
    root = tmp_path / "copy"
    shutil.copytree(base.parent, root)
    return root / "base", [root / t.name for t in tunes]


def spec_for(method, base, tunes, **extra):
    spec = {"method": method, "models": [{"path": str(t)} for t in tunes], **extra}
    if base is not None:
        spec["base"] = str(base)
    return spec


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Tests never read or write the user's cache (frozen task data, experts): one fresh cache per session."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TASKFUSE_CACHE", str(tmp_path_factory.mktemp("taskfuse-cache")))
        yield
