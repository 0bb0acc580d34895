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
                 max_new_tokens: int = typer.Option(64, min=1),
                 chat: bool = typer.Option(True, help="wrap each prompt in the large model's chat template")) -> None:
        """Dynamic Logits Fusion: softmax(z_L + α (z_t − z_S)) with α and the expert t chosen at every step."""
        from ..llm.decoding import pad_id
        from ..llm.evaluate import prompt_ids
        from ..llm.fusion import FusionTrace, fused_greedy
        try:
            if mode not in ("dynamic", "proxy"):
                raise UsageError(f"--mode {mode!r}: choose dynamic or proxy.")
            tok, models = _load(large, small, expert)
            ids = [prompt_ids(tok, p) if chat else tok(p).input_ids for p in prompt]
            started = time.perf_counter()
            trace = FusionTrace()
            replies = fused_greedy(models[0], models[1], models[2:], ids, max_new_tokens, tok.eos_token_id,
                                   pad_id(tok), mode, trace)
            fused_seconds = time.perf_counter() - started
            started = time.perf_counter()
            fused_greedy(models[0], models[0], [models[0]], ids, max_new_tokens, tok.eos_token_id, pad_id(tok),
                         "proxy")  # the same decoding loop with the large model alone, for the cost ratio
            alone = (time.perf_counter() - started) / 3  # that loop ran it three times per step
        except TaskfuseError as e:
            fail(e)
        for i, (text, reply) in enumerate(zip(prompt, replies)):
            steps = [(round(float(a[i]), 1), int(x[i])) for a, x in zip(trace.alphas, trace.experts)][:len(reply) + 1]
            print(f"> {text}\n{tok.decode(reply, skip_special_tokens=True)}\n  (alpha, expert) per token: {steps}")
        console.print(f"{mode} fusion of {len(expert)} expert(s): {fused_seconds:.1f} s, about "
                      f"{fused_seconds / max(alone, 1e-9):.1f}x the large model decoding alone", soft_wrap=True)


def _load(large: str, small: str, experts: list[str]):
    """Tokenizer and models (large, small, experts...) through taskfuse's readers, so GGUF files and
    BASE+ADAPTER work as in a spec."""
    from ..io.checkpoint import Checkpoint
    from ..io.transformers_model import load_model, load_tokenizer
    refs = [large, small, *experts]
    checkpoints = [Checkpoint.open(r) for r in refs]
    vocab = {c.config.get("vocab_size") for c in checkpoints if c.config}
    if len(vocab) > 1:
        raise UsageError(f"the models' vocabularies differ ({sorted(vocab)} rows): fusion adds logits token by "
                         "token and needs one tokenizer. Fix: use experts fine-tuned from a model sharing the large "
                         "model's tokenizer.")
    tok = load_tokenizer(checkpoints[0])
    return tok, [load_model(c) for c in checkpoints]
