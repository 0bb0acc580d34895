"""MoE upcycling: a dense base and its expert fine-tunes become one MoE checkpoint in the hub layout of the base's
family: Mixtral from Llama or Mistral, Qwen2-MoE from Qwen2, Qwen3-MoE from Qwen3. Attention, norms and embeddings
come from the base; each expert's MLP becomes one MoE expert; each layer's router starts from hidden states of the
expert's own prompts, so that a token like an expert's prompts goes to that expert. Top-k routing weights are
renormalised to sum to one in every format (Mixtral always does; the Qwen formats are given norm_topk_prob), so
experts that all equal the base give the base back.

Qwen2-MoE always has a shared expert beside the routed ones, added through a sigmoid gate. `shared_expert: none`
(default) makes it silent (one zero unit: the model computes what the Mixtral form would); `shared_expert: base`
makes it the base's MLP with its gate at zero, i.e. half the base's MLP added to the routed experts' output.

Router initialisation (the "hidden" idea of upcycling practice, written here from its description): for each
layer and expert, the mean over the tokens of the expert's positive prompts of the hidden state the router sees
(the base's post-attention norm output), minus the mean over its negative prompts if given, normalised to unit
length. `trained` starts there and fits each layer's router (everything else frozen) to send every token of an
expert's prompts to that expert. A random initialisation (seeded) is the baseline.

The output is the hub's per-expert layout (Mixtral: `block_sparse_moe.gate`, `experts.N.w1/w2/w3`; Qwen: `mlp.gate`,
`mlp.experts.N.gate_proj/up_proj/down_proj`), which transformers 4 and 5, vLLM and llama.cpp's converter read; it
is written shard by shard and renamed into place when complete.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import IncompatibleInputsError, SpecError
from ..io.checkpoint import Checkpoint
from ..io.gguf_read import GGUFCheckpoint
from ..io.layout import copy_side_files, write_index
from ..io.output import staged_output
from ..llm.decoding import pad_id, prefill
from .moe_tuning import tune_routers


@dataclass(frozen=True)
class MoEFormat:
    """Where an MoE family keeps its router and experts, under each layer's `model.layers.N.`."""

    model_type: str
    architecture: str
    router: str  # the router's weight
    expert: str  # one expert's module, formatted with its index
    names: dict[str, str]  # dense MLP module -> the expert's module of the same role
    shared_expert: bool = False


SAME_NAMES = {"gate_proj": "gate_proj", "up_proj": "up_proj", "down_proj": "down_proj"}
MIXTRAL = MoEFormat("mixtral", "MixtralForCausalLM", "block_sparse_moe.gate.weight", "block_sparse_moe.experts.{}",
                    {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"})
QWEN2_MOE = MoEFormat("qwen2_moe", "Qwen2MoeForCausalLM", "mlp.gate.weight", "mlp.experts.{}", SAME_NAMES, True)
QWEN3_MOE = MoEFormat("qwen3_moe", "Qwen3MoeForCausalLM", "mlp.gate.weight", "mlp.experts.{}", SAME_NAMES)
FORMATS = {"llama": MIXTRAL, "mistral": MIXTRAL, "qwen2": QWEN2_MOE, "qwen3": QWEN3_MOE}  # dense base -> its MoE


class TrainingExample(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(description="as the model sees it (chat template applied)")
    completion: str = Field(description="what the expert should answer, end-of-turn token included")


class MoEExpert(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="a full fine-tune, or BASE+ADAPTER")
    positive_prompts: list[str] = Field(min_length=1)
    negative_prompts: list[str] = Field(default_factory=list)
    examples: list[TrainingExample] = Field(default_factory=list, description="for tune_router")


class RouterTuning(BaseModel):
    """Every layer's router trained together through the MoE on the experts' examples (programs/moe_tuning.py)."""
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(100, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(8, ge=1)
    routing_loss: float = Field(1.0, ge=0, description="weight of the per-layer expert-assignment loss; 0: off")


class MoESpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base: str
    experts: list[MoEExpert] = Field(min_length=2)
    experts_per_token: int = Field(2, ge=1)
    router_init: Literal["hidden", "trained", "random"] = "hidden"
    router_steps: int = Field(200, ge=1, description="with router_init: trained, Adam steps per layer")
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    shared_expert: Literal["none", "base"] = Field("none", description="Qwen2-MoE only: silent, or the base's MLP")
    tune_router: RouterTuning | None = Field(None, description="after router_init, through the MoE on next tokens")
    seed: int = 0


def load_moe_spec(source: str | Path | dict) -> MoESpec:
    try:
        data = source if isinstance(source, dict) else yaml.safe_load(Path(source).read_text(encoding="utf-8"))
        spec = MoESpec.model_validate(data)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise SpecError(f"MoE spec {source}: cannot read it ({e}). Fix: give a UTF-8 YAML file.") from e
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise SpecError(f"MoE spec {source}: {problems}. Fix: see docs/llm.md for the format.") from e
    if spec.experts_per_token > len(spec.experts):
        raise SpecError(f"MoE spec: experts_per_token {spec.experts_per_token} exceeds the {len(spec.experts)} "
                        "experts. Fix: lower experts_per_token.")
    if spec.tune_router is not None:
        bare = [e.path for e in spec.experts if not e.examples]
        if bare:
            raise SpecError(f"MoE spec: tune_router needs examples for every expert; {', '.join(bare)} has none. "
                            "Fix: give each expert `examples: [{prompt, completion}, ...]`, or drop tune_router.")
    return spec


def upcycle(spec: MoESpec, out: Path, progress=None) -> dict:
    """Write the MoE checkpoint described by `spec` to `out`; returns a summary. `progress(step, steps, loss)` is
    called during router tuning."""
    base = Checkpoint.open(spec.base)
    if isinstance(base, GGUFCheckpoint):
        raise IncompatibleInputsError(f"base {base.ref!r} is a GGUF file; the router is initialised by running the "
                                      "base with transformers. Fix: taskfuse convert it to a folder first.")
    experts = [Checkpoint.open(e.path) for e in spec.experts]
    moe_format = _format_of(base, experts, spec)
    config = _moe_config(base, experts, spec, moe_format)
    routers = _routers(spec, base, config["num_hidden_layers"])
    dtype = getattr(torch, spec.dtype)
    summary = {"format": moe_format.model_type, "experts": len(experts), "layers": config["num_hidden_layers"],
               "router_init": spec.router_init, "experts_per_token": spec.experts_per_token}
    with staged_output(Path(out), "merge") as stage:
        tensors = _moe_tensors(base, experts, routers, moe_format, spec.shared_expert)
        summary["tensors"] = _write_tensors(stage, tensors, dtype)
        (stage / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        copy_side_files(base.root, base.root, stage)
        (stage / "taskfuse_moe.yaml").write_text(yaml.safe_dump(spec.model_dump(), sort_keys=False))
        if spec.tune_router is not None:  # on the written MoE, so it trains what will load; then rewritten
            t = spec.tune_router
            tuned, summary["tune_router"] = tune_routers(
                stage, [[(x.prompt, x.completion) for x in e.examples] for e in spec.experts], t.steps, t.lr,
                t.batch_size, t.routing_loss, spec.seed, progress)
            _rewrite_tensors(stage, {f"model.layers.{i}.{moe_format.router}": w for i, w in enumerate(tuned)},
                             dtype)
    return summary


def _format_of(base: Checkpoint, experts: list[Checkpoint], spec: MoESpec) -> MoEFormat:
    model_type = (base.config or {}).get("model_type")
    if model_type not in FORMATS:
        raise IncompatibleInputsError(
            f"base {base.ref!r} is a {model_type!r} model; MoE upcycling writes "
            f"{', '.join(sorted({f.architecture for f in FORMATS.values()}))} from {', '.join(FORMATS)} bases. "
            "Fix: use such a base.")
    for expert in experts:
        other = (expert.config or {}).get("model_type", model_type)  # an adapter's is its base's
        if other != model_type:
            raise IncompatibleInputsError(
                f"expert {expert.ref!r} is a {other!r} model and the base {base.ref!r} a {model_type!r} one. Fix: "
                "every expert must be a fine-tune of the base.")
    if spec.shared_expert == "base" and not FORMATS[model_type].shared_expert:
        raise SpecError(f"shared_expert: base needs a Qwen2 base (Qwen2-MoE has a shared expert); "
                        f"{FORMATS[model_type].model_type} has none. Fix: remove shared_expert.")
    return FORMATS[model_type]


def _moe_config(base: Checkpoint, experts: list[Checkpoint], spec: MoESpec, moe_format: MoEFormat) -> dict:
    config = dict(base.config or {})
    if config.get("mlp_bias") or (moe_format is MIXTRAL and config.get("attention_bias")):
        raise IncompatibleInputsError(f"base {base.ref!r} has biases in its MLP (or attention, for Mixtral), which "
                                      f"{moe_format.architecture} has not. Fix: use a base without them.")
    for expert in experts:
        for name, meta in base.tensors.items():
            if ".mlp." in name and (name not in expert.tensors or expert.tensors[name].shape != meta.shape):
                raise IncompatibleInputsError(
                    f"expert {expert.ref!r}: its tensor {name!r} is missing or shaped differently from the base's "
                    f"{tuple(meta.shape)}. Fix: every expert must be a fine-tune of the base's architecture.")
    keep = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "rms_norm_eps",
            "rope_theta", "rope_parameters", "rope_scaling", "tie_word_embeddings", "bos_token_id", "eos_token_id",
            "pad_token_id", "initializer_range", "attention_bias", "use_sliding_window", "max_window_layers")
    moe = {k: config[k] for k in keep if k in config}
    moe.update({"model_type": moe_format.model_type, "architectures": [moe_format.architecture], "dtype": spec.dtype,
                "num_experts_per_tok": spec.experts_per_token, "sliding_window": config.get("sliding_window"),
                "output_router_logits": False})
    if moe_format is MIXTRAL:
        moe["num_local_experts"] = len(experts)
    else:  # one MoE block in every layer, experts as wide as the dense MLP, top-k weights summing to one
        moe.update({"num_experts": len(experts), "moe_intermediate_size": config["intermediate_size"],
                    "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": []})
    if moe_format.shared_expert:
        moe["shared_expert_intermediate_size"] = config["intermediate_size"] if spec.shared_expert == "base" else 1
    return moe


def _routers(spec: MoESpec, base: Checkpoint, layers: int) -> list[torch.Tensor]:
    """Per layer, the router's (experts × hidden) weight."""
    if spec.router_init == "random":
        g = torch.Generator().manual_seed(spec.seed)
        hidden = base.config["hidden_size"]
        return [torch.randn(len(spec.experts), hidden, generator=g) * hidden ** -0.5 for _ in range(layers)]
    model, tok = _load_dense(base)
    inputs = [_router_inputs(model, tok, e.positive_prompts) for e in spec.experts]  # each (layers × rows × hidden,
    rows = []                                                                          # tokens per row)
    for expert, positive in zip(spec.experts, inputs):
        direction = _token_mean(*positive)
        if expert.negative_prompts:
            direction = direction - _token_mean(*_router_inputs(model, tok, expert.negative_prompts))
        rows.append(direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-8))
    routers = [torch.stack([r[layer] for r in rows]) for layer in range(layers)]
    if spec.router_init == "trained":
        routers = [_train_router(w, [(x[layer], tokens) for x, tokens in inputs], spec.router_steps, spec.seed)
                   for layer, w in enumerate(routers)]
    return routers


def _token_mean(rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(layers × hidden): the mean over every prompt token, from rows that each stand for `tokens` of them."""
    return (rows * tokens[:, None]).sum(1) / tokens.sum()


def _train_router(start: torch.Tensor, inputs: list[tuple[torch.Tensor, torch.Tensor]], steps: int,
                  seed: int) -> torch.Tensor:
    """One layer's router, from each expert's hidden rows (and how many prompt tokens each row stands for), trained
    (Adam, everything else frozen) to send each token of an expert's prompts to that expert: cross-entropy of the
    router's softmax against the expert's index, averaged over the tokens. The base's hidden states stand in for the
    MoE's, which equal them in layer 0 and drift from them after."""
    torch.manual_seed(seed)
    x = torch.cat([rows for rows, _ in inputs])
    tokens = torch.cat([t for _, t in inputs])
    y = torch.cat([torch.full((len(rows),), e) for e, (rows, _) in enumerate(inputs)])
    weight = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([weight], lr=1e-2)
    for _ in range(steps):
        loss = (torch.nn.functional.cross_entropy(x @ weight.T, y, reduction="none") * tokens).sum() / tokens.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return weight.detach()


def _load_dense(base: Checkpoint):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base.root, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(base.root)


@torch.inference_mode()
def _router_inputs(model, tok, prompts: list[str], batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(layers × rows × hidden) the router's input (the post-attention norm output) at the prompts' tokens, and
    (rows,) how many prompt tokens each row stands for. Prompts run in batches, left-padded; the opening all of a
    batch's prompts share (a chat template's system turn, the task's instructions) runs once at batch size 1 and its
    rows stand for every prompt of the batch, so means and losses over the rows are those over all tokens. Why:
    one prompt at a time this was a minute of the LLM benchmark's MoE, and the router's fit a minute more."""
    captured: list[torch.Tensor] = []
    hooks = [layer.post_attention_layernorm.register_forward_hook(lambda _m, _i, out: captured.append(out))
             for layer in model.model.layers]
    layers, rows, tokens = len(model.model.layers), [], []
    try:
        for start in range(0, len(prompts), batch):
            ids = [tok(prompt).input_ids for prompt in prompts[start:start + batch]]
            captured.clear()
            state = prefill([model], ids, pad_id(tok))  # the opening's pass (if any), then the rest's: 1 or 2 × layers
            shared = state.mask.shape[1] - captured[-1].shape[1]
            if shared:
                rows.append(torch.stack([h[0].float() for h in captured[:layers]]))
                tokens.append(torch.full((shared,), float(len(ids))))
            real = state.mask[:, shared:].bool()
            rows.append(torch.stack([h.float()[real] for h in captured[-layers:]]))
            tokens.append(torch.ones(int(real.sum())))
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat(rows, 1), torch.cat(tokens)


def _write_tensors(stage: Path, tensors, dtype) -> int:
    from safetensors.torch import save_file

    written, shard, shards, size = {}, {}, [], 0
    limit = 2 * 2**30

    def flush():
        nonlocal shard, size
        if shard:
            name = f"model-{len(shards) + 1:05d}.safetensors"
            save_file(shard, str(stage / name), metadata={"format": "pt"})
            shards.append(name)
            written.update({k: name for k in shard})
            shard, size = {}, 0

    total = 0
    for name, tensor in tensors:
        shard[name] = tensor.to(dtype).contiguous()
        size += shard[name].nbytes
        total += shard[name].nbytes
        if size >= limit:
            flush()
    flush()
    if len(shards) == 1:
        (stage / shards[0]).rename(stage / "model.safetensors")
    else:
        write_index(stage, written, total)  # total: the tensors' bytes, as the executor's index states
    return len(written)


def _rewrite_tensors(stage: Path, replacements: dict[str, torch.Tensor], dtype) -> None:
    """Replace the named tensors in the shards already written to `stage`, each shard rewritten whole and renamed
    over the old one (shards are at most 2 GB; the index stays valid: same names, shapes and dtype)."""
    from safetensors.torch import load_file, save_file

    index = stage / "model.safetensors.index.json"
    where = (json.loads(index.read_text())["weight_map"] if index.exists()
             else {name: "model.safetensors" for name in replacements})
    for shard in sorted({where[name] for name in replacements}):
        tensors = {k: v.clone() for k, v in load_file(str(stage / shard)).items()}
        tensors.update({n: w.to(dtype).contiguous() for n, w in replacements.items() if where[n] == shard})
        save_file(tensors, str(stage / f"{shard}.tmp"), metadata={"format": "pt"})
        os.replace(stage / f"{shard}.tmp", stage / shard)


def _moe_tensors(base: Checkpoint, experts: list[Checkpoint], routers, moe_format: MoEFormat, shared: str):
    """(name, tensor) of the MoE checkpoint, one at a time."""
    for name in base.tensors:
        if ".mlp." not in name:
            yield name, base.read(name)
            continue
        prefix, dense = name.split(".mlp.")
        module = dense.split(".")[0]
        if module == "gate_proj":  # once per layer: the router, and a shared expert's gate (sigmoid(0) = 1/2)
            layer = int(prefix.rsplit(".", 1)[-1])
            yield f"{prefix}.{moe_format.router}", routers[layer]
            if moe_format.shared_expert:
                yield f"{prefix}.mlp.shared_expert_gate.weight", torch.zeros(1, routers[layer].shape[1])
        for e, expert in enumerate(experts):
            yield f"{prefix}.{moe_format.expert.format(e)}.{moe_format.names[module]}.weight", expert.read(name)
        if moe_format.shared_expert:
            yield f"{prefix}.mlp.shared_expert.{module}.weight", (
                base.read(name) if shared == "base" else _silent(module, base.tensors[name].shape))


def _silent(module: str, shape) -> torch.Tensor:
    """A shared expert of one unit that outputs zero: its down projection is zero."""
    return torch.zeros(shape[0], 1) if module == "down_proj" else torch.zeros(1, shape[1])
