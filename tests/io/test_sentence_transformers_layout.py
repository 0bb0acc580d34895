"""A merge of sentence-transformers models keeps their modules: real tiny BERT models saved by sentence-transformers
itself with CLS pooling, normalisation and (in one family) a Dense projection, merged by `taskfuse merge` and loaded
back with `SentenceTransformer(OUT)`."""
import json

import pytest
import torch
from sentence_transformers import SentenceTransformer, models
from transformers import BertModel

from taskfuse import api
from taskfuse.errors import IncompatibleInputsError
from taskfuse.eval.encoder import load_tokenizer
from tests.cli.test_user_errors import assert_user_error, taskfuse, write_spec
from tests.programs.test_embedding_learning import _tiny_bert

TEXTS = ["a dog barked at the postman", "kernel modules load at boot", "the recipe needs two eggs"]


def _sentence_model(raw, dense_seed=None):
    transformer = models.Transformer(str(raw), max_seq_length=32)
    modules = [transformer, models.Pooling(transformer.get_embedding_dimension(), pooling_mode="cls")]
    if dense_seed is not None:
        torch.manual_seed(dense_seed)
        modules.append(models.Dense(32, 16))
    return SentenceTransformer(modules=[*modules, models.Normalize()], device="cpu")


def _family(root, dense_seeds=(None, None, None)):
    """A base and two fine-tunes (the base's weights moved by seeded noise), each saved by sentence-transformers."""
    _tiny_bert(root / "raw", 0)
    paths = []
    for i, name in enumerate(("base", "ft_a", "ft_b")):
        model = _sentence_model(root / "raw", dense_seeds[i])
        if i:
            torch.manual_seed(10 + i)
            with torch.no_grad():
                for p in model[0].auto_model.parameters():
                    p.add_(0.02 * torch.randn_like(p))
        model.save(str(root / name))
        paths.append(root / name)
    return paths


def _spec(base, models_):
    return {"method": "task_arithmetic", "base": str(base), "params": {"scale": 0.5},
            "models": [{"path": str(m)} for m in models_]}


def test_a_merge_of_sentence_transformers_models_embeds_with_their_pooling_and_normalisation(tmp_path):
    base, a, b = _family(tmp_path)
    result = api.merge(_spec(base, [a, b]), tmp_path / "out")
    assert {"modules.json", "1_Pooling", "sentence_bert_config.json"} <= set(result.files)
    merged = SentenceTransformer(str(tmp_path / "out"), device="cpu")
    assert [type(m).__name__ for m in merged] == ["Transformer", "Pooling", "Normalize"]
    assert merged[1].get_config_dict()["pooling_mode"] == "cls"
    # by hand: the merged transformer's first-token state, normalised, as the base model's modules compute it
    body = BertModel.from_pretrained(tmp_path / "out").eval()
    batch = load_tokenizer()(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        expected = torch.nn.functional.normalize(body(**batch).last_hidden_state[:, 0], dim=-1)
    got = merged.encode(TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # and it is not what the merged body gives under the mean pooling a loader falls back to without the modules
    assert (got - torch.nn.functional.normalize(body(**batch).last_hidden_state.mean(1), dim=-1)).abs().max() > 1e-3


def test_a_dense_projection_the_models_share_is_copied_and_one_they_differ_in_is_refused(tmp_path):
    base, a, b = _family(tmp_path / "same", dense_seeds=(7, 7, 7))
    api.merge(_spec(base, [a, b]), tmp_path / "same_out")
    merged = SentenceTransformer(str(tmp_path / "same_out"), device="cpu")
    assert [type(m).__name__ for m in merged] == ["Transformer", "Pooling", "Dense", "Normalize"]
    assert merged.encode(TEXTS).shape == (3, 16)

    base, a, b = _family(tmp_path / "differ", dense_seeds=(7, 7, 8))
    with pytest.raises(IncompatibleInputsError, match=r"ft_b: its sentence-transformers module 2_Dense/ holds "
                                                      r"weights .* differ"):
        api.merge(_spec(base, [a, b]), tmp_path / "differ_out")
    assert not (tmp_path / "differ_out").exists()


def test_models_pooled_differently_are_refused_by_the_cli_naming_the_setting(tmp_path):
    base, a, b = _family(tmp_path)
    config = b / "1_Pooling" / "config.json"
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({**settings, "pooling_mode": "mean"}))
    done = taskfuse("merge", write_spec(tmp_path, _spec(base, [a, b])), "-o", tmp_path / "out")
    assert_user_error(done, "model", "ft_b", "1_Pooling/config.json sets pooling_mode='mean'", "Fix:")
    assert not (tmp_path / "out").exists()
