"""The output tokenizer's chat template, where a spec sets one (`chat_template`, mergekit's key of the same name).

Merged chat models often come from fine-tunes with different templates, and the tokenizer copied from the base (or
`tokenizer_from`) carries only its own. The spec may name the template the output should carry: `auto`, the one
most of the models' tokenizers carry (the first of them on a tie); `chatml`, written in spec/chat_templates.py from
the ChatML format's documentation (mergekit's named template files are its own and are not copied); or the Jinja
text itself.

It is written as chat_template.jinja, which transformers reads before tokenizer_config.json's `chat_template`, and
into tokenizer_config.json as well where that file is the tokenizer source's own, for readers that know only it.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Sequence

from ..errors import SpecError
from ..execute.executor import side_files_root
from ..io.checkpoint import Checkpoint
from ..plan.plan import Plan
from ..spec.chat_templates import AUTO, NAMED


def carried_template(root: Path | None) -> str | None:
    """The chat template a model folder's tokenizer carries, read as transformers reads it."""
    if root is None:
        return None
    if (root / "chat_template.jinja").is_file():
        return (root / "chat_template.jinja").read_text(encoding="utf-8")
    config = root / "tokenizer_config.json"
    template = json.loads(config.read_text(encoding="utf-8")).get("chat_template") if config.is_file() else None
    if isinstance(template, list):  # named templates: the default one is what apply_chat_template uses
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    return template if isinstance(template, str) else None


def resolved_template(setting: str, checkpoints: Sequence[Checkpoint]) -> str:
    if setting != AUTO:
        return NAMED.get(setting, setting)
    carried = [t for t in (carried_template(side_files_root(c)) for c in checkpoints) if t is not None]
    if not carried:
        refs = ", ".join(c.ref for c in checkpoints)
        raise SpecError(f"chat_template: auto, but none of the models' tokenizers ({refs}) carries a chat template. "
                        "Fix: give the template's text, or 'chatml'.")
    counts = Counter(carried)
    return max(counts, key=lambda t: (counts[t], -carried.index(t)))


def chat_template_files(plan: Plan, checkpoints: Sequence[Checkpoint]) -> dict[str, bytes]:
    """The files that give the output the spec's chat template ({} when it sets none), made before anything is
    written, so that a template `auto` cannot find leaves no output."""
    setting = plan.spec.get("chat_template")
    if setting is None:
        return {}
    template = resolved_template(setting, checkpoints)
    files = {"chat_template.jinja": template.encode()}
    index = plan.tokenizer_from if plan.tokenizer_from is not None else plan.config_from  # as the executor reads
    source = checkpoints[index] if index is not None else None
    root = side_files_root(source)
    if root is not None and getattr(source, "alignment", None) is None and (root / "tokenizer_config.json").is_file():
        config = json.loads((root / "tokenizer_config.json").read_text(encoding="utf-8"))
        files["tokenizer_config.json"] = (json.dumps({**config, "chat_template": template}, indent=2) + "\n").encode()
    return files
