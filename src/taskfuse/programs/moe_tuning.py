"""Router tuning through the upcycled MoE itself: every layer's router learns together, everything else frozen, from
the next-token loss of the experts' own examples (prompt → completion, loss on the completion's tokens), run
through the MoE as it will be used (top-k routing, the routed experts' outputs, the MoE's own hidden states).

Why: the per-layer fit of `router_init: trained` sees the dense base's hidden states, which drift from the MoE's
after layer 0, and it can only send a task's tokens where tokens like them went; a task whose inputs look like
other tasks' (the LLM benchmark's text → genre) is routed to the wrong experts. The next-token loss asks instead
which routing makes the answer right.

Decided here (no paper prescribes it): top-k routing passes gradient only to the logits of the experts it picked,
so an expert that a token never picks cannot be learnt by the next-token loss alone. `routing_loss` adds, per layer,
the cross-entropy of the router's softmax against the expert whose example the token belongs to, on the MoE's own
hidden states (the auxiliary signal that reaches every expert's logit); 0 turns it off. Adam on the router weights
only; examples drawn in a seeded order across experts so each batch mixes tasks.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..llm.decoding import returned_cache, with_cache
from ..llm.zoo import prompt_opening, reply_batch
from .text_data import prompt_tokens


def tune_routers(folder: Path, examples: list[list[tuple[str, str]]], steps: int, lr: float, batch_size: int,
                 routing_loss: float, seed: int,
                 progress: Callable[[int, int, float], None] | None = None) -> tuple[list[torch.Tensor], dict]:
    """The tuned router weight of each layer of the MoE checkpoint in `folder`, and a record of the run.
    `examples[e]` holds expert e's (prompt, completion) pairs; prompts get the tokenizer's special tokens once
    (`prompt_tokens`), completions none."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()  # eval: no router jitter
    model.requires_grad_(False)
    routers = [_moe_block(layer).gate.weight for layer in model.model.layers]
    for p in routers:
        p.requires_grad_(True)
    pool = [(e, prompt_tokens(tok, prompt), tok(completion, add_special_tokens=False).input_ids)
            for e, pairs in enumerate(examples) for prompt, completion in pairs]
    order = random.Random(seed)
    optimizer = torch.optim.Adam(routers, lr=lr)
    losses, routing_losses, started = [], [], time.perf_counter()
    for step in range(steps):
        drawn = order.sample(pool, min(batch_size, len(pool)))
        ids, labels, mask = reply_batch([(p, c) for _, p, c in drawn], tok)
        owner = torch.tensor([e for e, _, _ in drawn])[:, None].expand_as(ids)
        shared = prompt_opening(ids, labels)
        next_token, routing = _losses(model, ids, mask, labels, owner, routing_loss > 0, shared)
        loss = next_token + routing_loss * routing
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(round(next_token.item(), 4))
        routing_losses.append(round(routing.item(), 4))
        if progress:
            progress(step + 1, steps, next_token.item())
    record = {"steps": steps, "lr": lr, "batch_size": batch_size, "routing_loss": routing_loss, "seed": seed,
              "examples": [len(pairs) for pairs in examples], "losses": losses,
              **({"routing_losses": routing_losses} if routing_loss > 0 else {}),
              "seconds": round(time.perf_counter() - started, 1)}
    return [p.detach().clone() for p in routers], record


def _losses(model, ids, mask, labels, owner, with_routing: bool,
            shared: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The next-token loss on the completions' tokens, and (if asked, else 0) the mean over layers of the routers'
    cross-entropy against each token's own expert. The first `shared` tokens, the same in every row (a chat
    template's system turn: a third of the LLM benchmark's tokens), run once at batch size 1; their key/value cache
    is repeated for the rows (gradients flow through the copies) and their router logits count once per row, each
    against that row's expert, so both losses are the plain forward pass's."""
    past, opening = None, ()
    if shared:
        first = model.model(input_ids=ids[:1, :shared], use_cache=True, output_router_logits=with_routing)
        past, opening = returned_cache(first), first.router_logits if with_routing else ()
        past.batch_repeat_interleave(ids.shape[0])
    out = model.model(input_ids=ids[:, shared:], attention_mask=mask, **with_cache(past),
                      use_cache=bool(shared), output_router_logits=with_routing)
    targets = labels[:, shared + 1:]
    keep = targets != -100
    # the output layer only where a label is: over every prompt token it would be a fifth of the step
    hidden = out.last_hidden_state[:, :-1][keep]
    next_token = torch.nn.functional.cross_entropy(model.lm_head(hidden).float(), targets[keep])
    if not with_routing:
        return next_token, torch.zeros(())
    rows, real = ids.shape[0], mask.bool().reshape(-1)
    per_layer = []
    for layer, logits in enumerate(out.router_logits):
        logits = logits.reshape(rows, -1, logits.shape[-1])  # (B, tokens after the opening, E)
        if shared:
            logits = torch.cat([opening[layer].reshape(1, shared, -1).expand(rows, -1, -1), logits], 1)
        per_layer.append(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float()[real],
                                                           owner.reshape(-1)[real]))
    return next_token, torch.stack(per_layer).mean()


def _moe_block(layer):
    """A decoder layer's MoE block: `block_sparse_moe` in transformers 4's Mixtral, `mlp` elsewhere."""
    return getattr(layer, "block_sparse_moe", None) or layer.mlp
