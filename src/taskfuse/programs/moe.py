"""MoE upcycling: a dense base and its expert fine-tunes become one Mixtral-format checkpoint. Attention, norms and
embeddings come from the base; each expert's MLP becomes one MoE expert; each layer's router starts from hidden
states of the expert's own prompts, so that a token like an expert's prompts goes to that expert.

Router initialisation (the "hidden" idea of upcycling practice, written here from its description): for each
layer and expert, the mean over the tokens of the expert's positive prompts of the hidden state the router sees
(the base's post-attention norm output), minus the mean over its negative prompts if given, normalised to unit
length. `trained` starts there and fits each layer's router (everything else frozen) to send every token of an
expert's prompts to that expert. A random initialisation (seeded) is the baseline.

The output is the hub's Mixtral layout (`block_sparse_moe.gate`, `experts.N.w1/w2/w3`), which transformers 4 and 5,
vLLM and llama.cpp's converter read; it is written shard by shard and renamed into place when complete.
"""
from __future__ import annotations

import json
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

DENSE_TYPES = ("llama", "mistral")  # bases whose layers map one to one onto Mixtral's
MLP = {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"}  # dense MLP name -> Mixtral expert name


class MoEExpert(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="a full fine-tune, or BASE+ADAPTER")
    positive_prompts: list[str] = Field(min_length=1)
    negative_prompts: list[str] = Field(default_factory=list)


class MoESpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base: str
    experts: list[MoEExpert] = Field(min_length=2)
    experts_per_token: int = Field(2, ge=1)
    router_init: Literal["hidden", "trained", "random"] = "hidden"
    router_steps: int = Field(200, ge=1, description="with router_init: trained, Adam steps per layer")
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
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
    return spec


def upcycle(spec: MoESpec, out: Path) -> dict:
    """Write the Mixtral checkpoint described by `spec` to `out`; returns a summary."""
    base = Checkpoint.open(spec.base)
    if isinstance(base, GGUFCheckpoint):
        raise IncompatibleInputsError(f"base {base.ref!r} is a GGUF file; the router is initialised by running the "
                                      "base with transformers. Fix: taskfuse convert it to a folder first.")
    experts = [Checkpoint.open(e.path) for e in spec.experts]
    config = _mixtral_config(base, experts, spec)
    routers = _routers(spec, base, config["num_hidden_layers"])
    dtype = getattr(torch, spec.dtype)
    with staged_output(Path(out), "merge") as stage:
        names = _write_tensors(stage, base, experts, routers, dtype)
        (stage / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        copy_side_files(base.root, base.root, stage)
        (stage / "taskfuse_moe.yaml").write_text(yaml.safe_dump(spec.model_dump(), sort_keys=False))
    return {"experts": len(experts), "layers": config["num_hidden_layers"], "tensors": names,
            "router_init": spec.router_init, "experts_per_token": spec.experts_per_token}


def _mixtral_config(base: Checkpoint, experts: list[Checkpoint], spec: MoESpec) -> dict:
    config = dict(base.config or {})
    if config.get("model_type") not in DENSE_TYPES:
        raise IncompatibleInputsError(f"base {base.ref!r} is a {config.get('model_type')!r} model; MoE upcycling "
                                      f"writes Mixtral from {', '.join(DENSE_TYPES)} bases. Fix: use such a base.")
    if config.get("mlp_bias") or config.get("attention_bias"):
        raise IncompatibleInputsError(f"base {base.ref!r} has biases in its attention or MLP, which Mixtral has not. "
                                      "Fix: use a base without them.")
    for expert in experts:
        for name, meta in base.tensors.items():
            if ".mlp." in name and (name not in expert.tensors or expert.tensors[name].shape != meta.shape):
                raise IncompatibleInputsError(
                    f"expert {expert.ref!r}: its tensor {name!r} is missing or shaped differently from the base's "
                    f"{tuple(meta.shape)}. Fix: every expert must be a fine-tune of the base's architecture.")
    keep = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "rms_norm_eps",
            "rope_theta", "rope_parameters", "rope_scaling", "tie_word_embeddings", "bos_token_id", "eos_token_id",
            "pad_token_id", "initializer_range")
    moe = {k: config[k] for k in keep if k in config}
    moe.update({"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "dtype": spec.dtype,
                "num_local_experts": len(experts), "num_experts_per_tok": spec.experts_per_token,
                "sliding_window": config.get("sliding_window"), "output_router_logits": False})
    return moe


def _routers(spec: MoESpec, base: Checkpoint, layers: int) -> list[torch.Tensor]:
    """Per layer, the router's (experts × hidden) weight."""
    if spec.router_init == "random":
        g = torch.Generator().manual_seed(spec.seed)
        hidden = base.config["hidden_size"]
        return [torch.randn(len(spec.experts), hidden, generator=g) * hidden ** -0.5 for _ in range(layers)]
    model, tok = _load_dense(base)
    inputs = [_router_inputs(model, tok, e.positive_prompts) for e in spec.experts]  # each layers × tokens × hidden
    rows = []
    for expert, positive in zip(spec.experts, inputs):
        direction = positive.mean(1)
        if expert.negative_prompts:
            direction = direction - _router_inputs(model, tok, expert.negative_prompts).mean(1)
        rows.append(direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-8))
    routers = [torch.stack([r[layer] for r in rows]) for layer in range(layers)]
    if spec.router_init == "trained":
        routers = [_train_router(w, [x[layer] for x in inputs], spec.router_steps, spec.seed)
                   for layer, w in enumerate(routers)]
    return routers


def _train_router(start: torch.Tensor, tokens: list[torch.Tensor], steps: int, seed: int) -> torch.Tensor:
    """One layer's router, from the hidden rows, trained (Adam, everything else frozen) to send each token of an
    expert's prompts to that expert: cross-entropy of the router's softmax against the expert's index. The base's
    hidden states stand in for the MoE's, which equal them in layer 0 and drift from them after."""
    torch.manual_seed(seed)
    x = torch.cat(tokens)
    y = torch.cat([torch.full((len(t),), e) for e, t in enumerate(tokens)])
    weight = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([weight], lr=1e-2)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(x @ weight.T, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return weight.detach()


def _load_dense(base: Checkpoint):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base.root, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(base.root)


@torch.inference_mode()
def _router_inputs(model, tok, prompts: list[str]) -> torch.Tensor:
    """(layers × tokens × hidden): every prompt token's post-attention norm output, the input of a layer's router."""
    per_prompt, captured = [], []
    hooks = [layer.post_attention_layernorm.register_forward_hook(lambda _m, _i, out: captured.append(out[0]))
             for layer in model.model.layers]
    try:
        for prompt in prompts:
            captured.clear()
            model(**tok(prompt, return_tensors="pt"))
            per_prompt.append(torch.stack([h.float() for h in captured]))
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat(per_prompt, 1)


def _write_tensors(stage: Path, base: Checkpoint, experts: list[Checkpoint], routers, dtype) -> int:
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
    for name, tensor in _moe_tensors(base, experts, routers):
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


def _moe_tensors(base: Checkpoint, experts: list[Checkpoint], routers):
    """(name, tensor) of the Mixtral checkpoint, one at a time."""
    for name in base.tensors:
        if ".mlp." not in name:
            yield name, base.read(name)
            continue
        prefix, dense = name.split(".mlp.")
        module = dense.split(".")[0]
        if module == "gate_proj":  # once per layer: the router
            layer = int(prefix.rsplit(".", 1)[-1])
            yield f"{prefix}.block_sparse_moe.gate.weight", routers[layer]
        for e, expert in enumerate(experts):
            yield f"{prefix}.block_sparse_moe.experts.{e}.{MLP[module]}.weight", expert.read(name)
