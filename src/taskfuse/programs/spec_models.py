"""What kind of models a spec given to `taskfuse learn --spec` holds, read from their files before any loads.

Each kind learns with its own objective: causal LMs on next tokens, sequence classifiers through their own heads,
embedding models (sentence-transformers folders, or bare encoders such as a `BertModel`, which sentence-transformers
reads with mean pooling) on pairs or labelled texts. A PEFT adapter learns as the kind it adapts: a SEQ_CLS adapter
as the classifier it was trained as (io/classifier_adapter.py), a FEATURE_EXTRACTION adapter (PEFT's type for an
encoder's embeddings) as its base's embedding model with the update added. Anything else (a masked LM, a token
classifier, an adapter for another task type) is refused with what to do, instead of being loaded as a causal LM with
a freshly drawn head, which transformers does with a warning and which would learn from noise.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import SpecError, UsageError
from ..spec.model import MergeSpec

CAUSAL, CLASSIFIER, EMBEDDING = "causal", "classifier", "embedding"
KINDS = {CAUSAL: "causal LMs", CLASSIFIER: "sequence classifiers", EMBEDDING: "embedding models"}
# PEFT task types whose adapters learn like their kind (an adapter with none learns as its base's kind)
ADAPTER_KINDS = {"CAUSAL_LM": CAUSAL, "SEQ_CLS": CLASSIFIER, "FEATURE_EXTRACTION": EMBEDDING}


def model_kind(path: str) -> str:
    """CAUSAL, CLASSIFIER or EMBEDDING for one model as the spec names it; a typed refusal otherwise."""
    folder = Path(path)
    if not folder.exists() and "+" in path:  # BASE+ADAPTER
        folder = Path(path.split("+", 1)[1])
    if (folder / "adapter_config.json").is_file():
        return _adapter_kind(path, folder)
    if (folder / "modules.json").is_file():
        return EMBEDDING
    config = folder / "config.json"
    if not config.is_file():
        return CAUSAL  # a GGUF file, or a folder the causal-LM loader refuses with its own error
    architecture = (json.loads(config.read_text()).get("architectures") or [""])[0]
    if not architecture:
        return CAUSAL  # nothing says otherwise; transformers' causal-LM loader decides
    if architecture.endswith("ForSequenceClassification"):
        return CLASSIFIER
    if architecture in _names("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"):
        return CAUSAL
    if architecture in _names("MODEL_MAPPING_NAMES"):  # the bare body: BertModel, MPNetModel, ...
        return EMBEDDING
    raise UsageError(
        f"model {path} is a {architecture}: taskfuse learn --spec learns causal LMs (next-token loss), sequence "
        "classifiers (through each one's head) and embedding models (sentence-transformers folders or bare encoders, "
        f"on pairs or labelled texts), and a {architecture} is none of them; loaded as a causal LM its head would "
        "be drawn at random. Fix: merge it data-free (taskfuse merge), or learn over the models saved as one of "
        "those kinds.")


def spec_model_kind(spec: MergeSpec) -> str:
    """The one kind of the spec's models; a mix is refused."""
    kinds = {entry.path: model_kind(entry.path) for entry in spec.models}
    if len(set(kinds.values())) > 1:
        listed = "; ".join(f"{p}: {KINDS[k]}" for p, k in kinds.items())
        raise SpecError(f"the spec mixes kinds of model ({listed}): each learns with its own objective. Fix: learn "
                        "each kind in a spec of its own.")
    return next(iter(kinds.values()))


def _adapter_kind(path: str, folder: Path) -> str:
    config = json.loads((folder / "adapter_config.json").read_text())
    task_type = config.get("task_type")
    if task_type is None:  # PEFT's plain adapter (and `merge --as-adapter`'s output) adapts its base as it is
        base = path.split("+", 1)[0] if not Path(path).exists() else config.get("base_model_name_or_path")
        return model_kind(base) if base and Path(base).exists() else CAUSAL  # a hub id: the causal loader decides
    if task_type in ADAPTER_KINDS:
        return ADAPTER_KINDS[task_type]
    raise UsageError(
        f"model {path} is a PEFT adapter for task type {task_type}: learn --spec reads adapters of causal LMs "
        "(CAUSAL_LM), of sequence classifiers (SEQ_CLS), each learned through its own head, and of "
        "embedding models (FEATURE_EXTRACTION), and adapters of no task type as their base's kind. "
        "Fix: merge the adapters data-free (taskfuse merge), or learn over adapters of those task types.")


def _names(mapping: str) -> set[str]:
    from transformers.models.auto import modeling_auto
    names = set()
    for value in getattr(modeling_auto, mapping).values():
        names.update([value] if isinstance(value, str) else value)
    return names
