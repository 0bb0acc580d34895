import json

import pytest

from taskfuse.testing.tiny_llm import fortune_texts, save_finetune, save_tiny_causal_lm


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    """A tiny causal LM, two fine-tunes of it and a JSONL of fortunes for each (the statistics tests' models)."""
    root = tmp_path_factory.mktemp("stats-cli")
    base = save_tiny_causal_lm(root / "base")
    tunes = [save_finetune(root / f"ft{i}", base, seed=i + 1) for i in range(2)]
    data = []
    for i, texts in enumerate((fortune_texts(40)[:20], fortune_texts(40)[20:])):
        path = root / f"task{i}.jsonl"
        path.write_text("".join(json.dumps({"prompt": t[:40], "completion": t[40:120]}) + "\n" for t in texts))
        data.append(path)
    return base, tunes, data
