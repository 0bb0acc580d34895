"""A base saved as the bare body and fine-tunes saved in a class that wraps it (or the reverse) share no tensor
names: the merge says so, with the prefix and the fix, instead of offering rules that would write the base back."""
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel

from taskfuse.programs.wrapped_names import wrapping
from tests.cli.test_user_errors import assert_user_error, taskfuse, write_spec


def _config():
    return BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)


def test_a_bare_base_under_wrapped_fine_tunes_is_named_with_its_prefix_and_fix(tmp_path):
    torch.manual_seed(0)
    BertModel(_config()).save_pretrained(tmp_path / "bare")
    for i in range(2):
        BertForSequenceClassification(_config()).save_pretrained(tmp_path / f"ft{i}")
    spec = write_spec(tmp_path, {"method": "task_arithmetic", "base": str(tmp_path / "bare"),
                                 "models": [{"path": str(tmp_path / f"ft{i}")} for i in range(2)]})
    for command in (["merge", spec, "-o", tmp_path / "out"], ["plan", spec]):
        text = assert_user_error(taskfuse(*command), "under `bert.`", "without it",
                                 "BertForSequenceClassification.from_pretrained(BARE)")
        assert "copy_base" not in text  # the rule that would have written the base back is not offered
    assert not (tmp_path / "out").exists()
    reverse = write_spec(tmp_path, {"method": "task_arithmetic", "base": str(tmp_path / "ft0"),
                                    "models": [{"path": str(tmp_path / "bare")}]}, "reverse.yaml")
    assert_user_error(taskfuse("merge", reverse, "-o", tmp_path / "out2"), "base", "under `bert.`",
                      f"model '{tmp_path / 'bare'}'")


def test_only_a_prefix_over_most_of_the_names_counts_as_wrapping():
    body = {"embeddings.word.weight", "encoder.0.weight", "encoder.1.weight", "pooler.weight"}
    wrapped = {f"bert.{n}" for n in body} | {"classifier.weight"}
    assert wrapping(body, wrapped) == ("bert", True) and wrapping(wrapped, body) == ("bert", False)
    assert wrapping(body, body | {"extra.weight"}) is None  # the same names: an ordinary mismatch
    assert wrapping(body, {"bert.encoder.0.weight", "other.a", "other.b", "other.c"}) is None  # one of four
