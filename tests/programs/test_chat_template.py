"""A spec's `chat_template` (mergekit's key): the output tokenizer carries the template named, found or given."""
import json

import pytest
import yaml
from transformers import AutoTokenizer

from taskfuse import SpecError, merge
from taskfuse.spec import parse_spec
from taskfuse.spec.chat_templates import CHATML
from taskfuse.testing.tiny_llm import save_finetune, save_tiny_causal_lm

OTHER = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
CONVERSATION = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def chat_models(tmp_path_factory):
    """A base and three fine-tunes whose tokenizers carry the tiny models' ChatML-like template; then the base and
    two fine-tunes are given another one: three of the four models carry it."""
    root = tmp_path_factory.mktemp("chat")
    base = save_tiny_causal_lm(root / "base", tie=False)
    tunes = [save_finetune(root / f"ft{i}", base, seed=i + 1) for i in range(3)]
    for model in (base, *tunes[1:]):
        (model / "chat_template.jinja").write_text(OTHER)
    return base, tunes


def recipe(base, tunes, template):
    return {"merge_method": "task_arithmetic", "base_model": str(base), "chat_template": template,
            "models": [{"model": str(t), "parameters": {"weight": 0.5}} for t in tunes]}


def test_chatml_is_written_where_transformers_reads_it(tmp_path, chat_models):
    out = merge(recipe(*chat_models, "chatml"), tmp_path / "out").out
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == CHATML
    assert tok.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True) == \
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == CHATML  # older readers


def test_auto_takes_the_template_most_models_carry(tmp_path, chat_models):
    out = merge(recipe(*chat_models, "auto"), tmp_path / "out").out
    assert AutoTokenizer.from_pretrained(out).apply_chat_template(CONVERSATION, tokenize=False) == "[user] hi\n"


def test_template_text_is_taken_as_given_and_the_replayed_spec_keeps_it(tmp_path, chat_models):
    out = merge(recipe(*chat_models, OTHER), tmp_path / "out").out
    assert AutoTokenizer.from_pretrained(out).chat_template == OTHER
    assert yaml.safe_load((out / "taskfuse_spec.yaml").read_text())["chat_template"] == OTHER


def test_auto_without_any_template_is_refused_and_nothing_is_written(tmp_path, chat_models):
    base, tunes = chat_models
    bare = []
    for path in (base, tunes[0]):
        copy = tmp_path / path.name
        copy.mkdir()
        for f in path.iterdir():
            if f.name != "chat_template.jinja":
                text = f.read_bytes()
                if f.name == "tokenizer_config.json":
                    text = json.dumps({k: v for k, v in json.loads(text).items() if k != "chat_template"}).encode()
                (copy / f.name).write_bytes(text)
        bare.append(copy)
    with pytest.raises(SpecError, match="none of the models' tokenizers .* carries a chat template"):
        merge(recipe(bare[0], bare[1:], "auto"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_template_name_taskfuse_does_not_have_is_refused_with_the_fix(chat_models):
    with pytest.raises(SpecError, match=r"chat_template 'llama3' is neither 'auto'.*Fix: give the template's text"):
        parse_spec(recipe(*chat_models, "llama3"))


def test_outputs_without_tokenizer_files_refuse_it_on_the_command_line(tmp_path, chat_models):
    from tests.cli.test_user_errors import assert_user_error, taskfuse
    spec = tmp_path / "recipe.yaml"
    spec.write_text(yaml.safe_dump(recipe(*chat_models, "chatml")))
    for options in (["--format", "gguf"], ["--as-adapter"]):
        assert_user_error(taskfuse("merge", spec, "-o", tmp_path / "out", *options),
                          "chat_template is written into a model folder's tokenizer files")
        assert not (tmp_path / "out").exists()
