"""The chat templates a spec may name (`chat_template`; programs/chat_template.py writes them into the output)."""
from __future__ import annotations

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{% endif %}")
NAMED = {"chatml": CHATML}
AUTO = "auto"


def is_template_text(value: str) -> bool:
    return "{{" in value or "{%" in value


def check_setting(value: str) -> str:
    """The spec's value, or a ValueError naming what is accepted (the spec's validation reports it)."""
    if value == AUTO or value in NAMED or is_template_text(value):
        return value
    raise ValueError(f"chat_template {value!r} is neither 'auto', a template taskfuse has ({', '.join(NAMED)}), nor "
                     "Jinja text. Fix: give the template's text (a tokenizer_config.json's `chat_template`), or "
                     "'auto' for the one most of the models carry.")
