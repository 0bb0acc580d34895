"""A MoE spec file, taskfuse's or mergekit-moe's (translated by spec/mergekit_moe.py), read into a checked MoESpec."""
from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import SpecError
from ..spec.mergekit_moe import is_mergekit_moe, translate_mergekit_moe
from .moe import MoESpec, load_moe_spec


def read_moe_spec(path: str | Path) -> MoESpec:
    """The file's MoE spec; a mergekit-moe config is translated first and its problems name the file."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return load_moe_spec(path)  # which says what is wrong with the file
    if not is_mergekit_moe(data):
        return load_moe_spec(path)
    translated = translate_mergekit_moe(data, str(path))
    try:
        return load_moe_spec(translated)
    except SpecError as e:  # load_moe_spec names its source: the file, not the translated dict
        raise SpecError(str(e).replace(f"MoE spec {translated}", f"MoE spec {path} (translated from "
                                       "mergekit-moe)").replace("MoE spec:", f"MoE spec {path} (translated from "
                                                                "mergekit-moe):")) from e
