"""`taskfuse generate`: answer prompts with a large model steered at decode time by small experts (Dynamic Logits
Fusion, or proxy tuning), printing each reply, the α and expert applied per token, and the cost against the
large model alone."""
from __future__ import annotations

import time
from typing import Optional

import typer
from rich.console import Console

from ..errors import TaskfuseError, UsageError

console = Console(stderr=True)


def register(app: typer.Typer, fail) -> None:
    @app.command()
    def generate(prompt: list[str] = typer.Option(..., "--prompt", help="a user message (repeatable)"),
                 large: str = typer.Option(..., help="the model that answers: a folder or .gguf"),
                 small: str = typer.Option(..., help="the model the experts were fine-tuned from (same tokenizer)"),
                 expert: list[str] = typer.Option(..., "--expert", help="a fine-tune of SMALL, or SMALL+ADAPTER "
                                                  "(repeatable)"),
                 mode: str = typer.Option("dynamic", help="dynamic (α per step by KL matching) or proxy (α = 1)"),
                 route_by: Optional[list[str]] = typer.Option(
                     None, "--route-by", help="example prompts of each expert, a JSONL file of {\"prompt\"} per "
                     "--expert in the same order: a router on SMALL's reading of the prompt then sends each prompt "
                     "to one expert, instead of choosing among all of them at every step"),
                 max_new_tokens: int = typer.Option(64, min=1),
                 chat: bool = typer.Option(True, help="wrap each prompt in the large model's chat template")) -> None:
        """Dynamic Logits Fusion: softmax(z_L + α (z_t − z_S)) with α and the expert t chosen at every step (or t
        picked once per prompt with --route-by)."""
        from ..llm.decoding import pad_id
        from ..llm.evaluate import prompt_ids
        from ..llm.fusion import FusionTrace, fused_greedy
        try:
            if mode not in ("dynamic", "proxy"):
                raise UsageError(f"--mode {mode!r}: choose dynamic or proxy.")
            if route_by and len(route_by) != len(expert):
                raise UsageError(f"{len(route_by)} --route-by file(s) for {len(expert)} --expert(s): give one file "
                                 "of example prompts per expert, in the same order.")
            examples = _examples(route_by) if route_by else None  # a bad file fails before any model is read
            tok, large_model, small_model, load_expert = _open(large, small, expert)
            ids = [prompt_ids(tok, p) if chat else tok(p).input_ids for p in prompt]
            # routed, an expert is read only if a prompt goes to it, and let go before the next one: memory holds
            # one expert whatever the number given. Unrouted, every expert is offered at every step.
            everyone = None if route_by else [load_expert(i) for i in range(len(expert))]
            started, loading = time.perf_counter(), 0.0
            picked = _routed(small_model, tok, examples, prompt) if route_by else [None] * len(prompt)
            replies, steps = [None] * len(prompt), [None] * len(prompt)
            for group in sorted(set(picked), key=str):  # one decoding per expert the router chose
                rows = [i for i, p in enumerate(picked) if p == group]
                trace, offered = FusionTrace(), everyone
                if group is not None:
                    begun = time.perf_counter()
                    offered = [load_expert(group)]
                    loading += time.perf_counter() - begun
                for row, reply in zip(rows, fused_greedy(large_model, small_model, offered, [ids[i] for i in rows],
                                                         max_new_tokens, tok.eos_token_id, pad_id(tok), mode, trace)):
                    replies[row] = reply
                del offered
                for k, row in enumerate(rows):
                    expert_of = (lambda x: int(x[k])) if group is None else (lambda x: group)
                    steps[row] = [(round(float(a[k]), 1), expert_of(x))
                                  for a, x in zip(trace.alphas, trace.experts)][:len(replies[row]) + 1]
            fused_seconds = time.perf_counter() - started - loading  # reading experts is not decoding
            started = time.perf_counter()
            fused_greedy(large_model, large_model, [large_model], ids, max_new_tokens, tok.eos_token_id, pad_id(tok),
                         "proxy")  # the same decoding loop with the large model alone, for the cost ratio
            alone = (time.perf_counter() - started) / 3  # that loop ran it three times per step
        except TaskfuseError as e:
            fail(e)
        for i, (text, reply) in enumerate(zip(prompt, replies)):
            routed = "" if picked[i] is None else f"  routed to expert {picked[i]} ({expert[picked[i]]})\n"
            print(f"> {text}\n{tok.decode(reply, skip_special_tokens=True)}\n{routed}"
                  f"  (alpha, expert) per token: {steps[i]}")
        console.print(f"{mode} fusion of {len(expert)} expert(s){', routed by the prompt' if route_by else ''}: "
                      f"{fused_seconds:.1f} s, about {fused_seconds / max(alone, 1e-9):.1f}x the large model "
                      "decoding alone", soft_wrap=True)


def _examples(route_by: list[str]) -> list[list[str]]:
    from ..routing.prompt_router import read_prompts
    return [read_prompts(path) for path in route_by]


def _routed(small, tok, examples: list[list[str]], prompts: list[str]) -> list[int]:
    """The expert a prompt router, trained on each expert's example prompts, picks for each prompt."""
    from ..routing.prompt_router import pick_experts, train_prompt_router
    return pick_experts(train_prompt_router(small, tok, examples), small, tok, prompts)


def _open(large: str, small: str, experts: list[str]):
    """Tokenizer, large and small models, and a loader of the i-th expert, through taskfuse's readers, so GGUF files
    and BASE+ADAPTER work as in a spec. Every checkpoint's header is read first, so a vocabulary mismatch is found
    before any weights are."""
    from ..io.checkpoint import Checkpoint
    from ..io.transformers_model import load_model, load_tokenizer
    checkpoints = [Checkpoint.open(r) for r in [large, small, *experts]]
    vocab = {c.config.get("vocab_size") for c in checkpoints if c.config}
    if len(vocab) > 1:
        raise UsageError(f"the models' vocabularies differ ({sorted(vocab)} rows): fusion adds logits token by "
                         "token and needs one tokenizer. Fix: use experts fine-tuned from a model sharing the large "
                         "model's tokenizer.")
    tok = load_tokenizer(checkpoints[0])
    return tok, load_model(checkpoints[0]), load_model(checkpoints[1]), lambda i: load_model(checkpoints[2 + i])
