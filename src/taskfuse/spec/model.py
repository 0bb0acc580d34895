"""The taskfuse merge spec (version 1). Unknown keys are errors; see load.py for how they are reported."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .chat_templates import check_setting

STRICT = ConfigDict(extra="forbid")
DType = Literal["float32", "float16", "bfloat16"]


class ModelEntry(BaseModel):
    model_config = STRICT
    path: str = Field(description="local directory, .safetensors or .gguf file, PEFT adapter, or hub id")
    weight: float = 1.0
    params: dict[str, Any] = Field(default_factory=dict, description="per-model method parameters (e.g. density)")
    statistics: str | None = Field(None, description="a .safetensors file of this model's statistics on its task's "
                                   "data, for methods that merge with them (regmean: Gram matrices, fisher: Fisher "
                                   "diagonals); written by `taskfuse statistics`")


class Override(BaseModel):
    """Tensors whose names match any glob get this method and/or these parameters (later overrides win)."""

    model_config = STRICT
    tensors: str | list[str]
    method: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    weights: list[float] | None = Field(None, description="per-model weights for these tensors, one per entry of "
                                        "`models` in order, replacing each model's `weight` (learned merges "
                                        "record their per-tensor coefficients this way)")

    @property
    def globs(self) -> list[str]:
        return [self.tensors] if isinstance(self.tensors, str) else list(self.tensors)


class TensorRules(BaseModel):
    """What happens to tensors that are not plain floating-point tensors present in every model."""

    model_config = STRICT
    # in the base (or first model) but absent from some models
    missing: Literal["error", "merge_present", "copy_base"] = "error"
    # in some models but absent from the base (or first model)
    extra: Literal["error", "drop"] = "error"
    # integer/bool buffers (position ids, masks) cannot be averaged: copy them from the base, or refuse
    integer: Literal["copy_base", "error"] = "copy_base"


class SliceEntry(BaseModel):
    """Layer stacking: take layers [start, end) of `model` (passthrough only)."""

    model_config = STRICT
    model: str
    layers: tuple[int, int]


# methods that divide by the sum of the models' weights → the parameter that turns that off (None: always)
AVERAGING = {"linear": "normalize", "karcher": None, "multislerp": "normalize_weights",
             "multislerp_task_vectors": "normalize_weights"}


class MergeSpec(BaseModel):
    model_config = STRICT
    taskfuse: Literal[1] = Field(1, description="spec format version")
    method: str
    base: str | None = None
    models: list[ModelEntry] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict, description="method parameters; a list is a per-layer "
                                   "schedule interpolated across layers")
    overrides: list[Override] = Field(default_factory=list)
    dtype: DType | None = Field(None, description="output dtype; default: the base's floating dtype")
    seed: int = 0
    config_from: str | None = Field(None, description="'base' or a model path; default: base, else first model")
    tokenizer_from: str | None = Field(None, description="'base', a model path, or 'union' (the first checkpoint's "
                                       "tokenizer plus every token the others add); where the models' vocabularies "
                                       "differ, embedding rows are matched by token")
    pad_vocab_to_multiple_of: int | None = Field(None, ge=1, description="round the output's vocabulary rows up to a "
                                                 "multiple of this (embeddings are then matched by token)")
    chat_template: str | None = Field(None, description="the output tokenizer's chat template: 'auto' (the one "
                                      "most of the models' tokenizers carry), 'chatml', or Jinja text")
    tensor_rules: TensorRules = Field(default_factory=TensorRules)
    slices: list[SliceEntry] | None = None
    depth: int | None = Field(None, ge=1, description="the models' number of layers, where the spec was written "
                              "for one (a mergekit config whose merged slices name layer ranges): the merge is "
                              "refused unless the models have exactly this many")

    @model_validator(mode="after")
    def _override_weights_fit(self) -> "MergeSpec":
        for i, ov in enumerate(self.overrides):
            if ov.weights is not None and len(ov.weights) != len(self.models):
                raise ValueError(f"overrides[{i}] ({ov.globs[0]!r}) gives {len(ov.weights)} weights for "
                                 f"{len(self.models)} models: give one weight per entry of `models`, in order")
        return self

    @model_validator(mode="after")
    def _averaged_weights_sum_to_something(self) -> "MergeSpec":
        """The averaging methods divide by the sum of the weights; at 0 there is no average (linear fell back to the
        plain weighted sum, a difference of models or all zeros, and wrote it without a word; Karcher and
        Multi-SLERP stopped on NaN, blaming an overflow)."""
        checks = [("the models' weights", self.method, self.params, [m.weight for m in self.models])]
        checks += [(f"overrides[{i}]'s weights", ov.method or self.method,
                    ov.params if ov.method and ov.method != self.method else {**self.params, **ov.params}, ov.weights)
                   for i, ov in enumerate(self.overrides) if ov.weights is not None]
        for what, method, params, weights in checks:
            if method not in AVERAGING or abs(sum(weights)) >= 1e-12:
                continue
            switch = AVERAGING[method]
            if switch is None or params.get(switch, True) is not False:
                raise ValueError(f"{method} divides by the sum of {what}, and {weights} sum to 0. Fix: weights with "
                                 "a non-zero sum; " + (f"`params: {{{switch}: false}}` to take them as they are; "
                                                       if switch else "") +
                                 "or task_arithmetic with a base to subtract a model's update")
        return self

    @field_validator("chat_template")
    @classmethod
    def _known_template(cls, value: str | None) -> str | None:
        return None if value is None else check_setting(value)

    @field_validator("models")
    @classmethod
    def _distinct(cls, models: list[ModelEntry]) -> list[ModelEntry]:
        paths = [m.path for m in models]
        dup = sorted({p for p in paths if paths.count(p) > 1})
        if dup:
            raise ValueError(f"model(s) listed twice: {', '.join(dup)}")
        return models
