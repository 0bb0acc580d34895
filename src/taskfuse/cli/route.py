"""`taskfuse route`: a library of LoRA adapters composed. Arrow (no training, no data), PHATGOOSE (each adapter's
gates trained on its own text, programs/phatgoose_gates.py) and MHR (routing adapted to a new task's examples,
programs/mhr_new_task.py) write a routed model in the format `taskfuse.routing.store.load_routed` reads back as a
torch module; LoraHub (weights searched on a new task's examples, programs/lorahub_adapter.py) writes one PEFT
adapter. The learnt ones take a causal LM's adapters and text."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..errors import TaskfuseError, UsageError

console = Console(stderr=True)
# which routers read each option
TAKEN_BY = {"--top-k": ("arrow", "phatgoose"), "--temperature": ("arrow",), "--data": ("phatgoose", "lorahub", "mhr"),
            "--budget": ("lorahub",), "--l1": ("lorahub",), "--steps": ("phatgoose", "mhr"), "--heads": ("mhr",),
            "--skills": ("mhr",), "--lr": ("phatgoose",), "--seed": ("mhr", "lorahub"),
            "--finetune-steps": ("lorahub",)}


def register(app: typer.Typer, fail) -> None:
    @app.command()
    def route(router: str = typer.Argument(..., help="arrow (training-free per-token routing), phatgoose (gates "
                                            "trained on each adapter's --data, then per-token top-k), mhr (routing "
                                            "per head block adapted to a new task's examples) or lorahub (one "
                                            "weight per adapter searched on a new task's examples, written as one "
                                            "PEFT adapter)"),
              base: str = typer.Option(..., help="the base model the adapters were trained on"),
              adapter: list[str] = typer.Option(..., "--adapter", help="a PEFT LoRA adapter directory; repeat "
                                                "for each adapter of the library (NAME=PATH names it)"),
              out: Path = typer.Option(..., "-o", "--out", help="folder for the routed model, or lorahub's adapter "
                                       "(new, empty, or an earlier output of the same kind)"),
              top_k: Optional[int] = typer.Option(None, min=1, help="adapters mixed per token (default: 3 for "
                                                  "arrow, 2 for phatgoose, as their papers)"),
              temperature: Optional[float] = typer.Option(None, help="arrow: softmax temperature over the top-k "
                                                          "scores (default 1)"),
              data: Optional[list[str]] = typer.Option(None, "--data", help="phatgoose: NAME=FILE.jsonl, the text "
                                                       "an adapter was trained on ({\"text\"} or {\"prompt\", "
                                                       "\"completion\"} per line), one per --adapter; lorahub and "
                                                       "mhr: one FILE.jsonl of the new task's examples"),
              budget: Optional[int] = typer.Option(None, min=2, help="lorahub: loss evaluations of the search "
                                                   "(default: the paper's 40)"),
              l1: Optional[float] = typer.Option(None, min=0, help="lorahub: penalty on Σ|weight| (default: the "
                                                 "paper's 0.05)"),
              steps: Optional[int] = typer.Option(None, min=1, help="phatgoose: gate-training steps per adapter "
                                                  "(default 100); mhr: adaptation steps (default 40)"),
              heads: Optional[int] = typer.Option(None, min=1, help="mhr: head blocks each module's mixture is "
                                                  "routed over (default 8)"),
              skills: bool = typer.Option(False, "--skills", help="mhr: the adapters' factors learn too (Poly's "
                                          "fine-tuning), not only the routing"),
              lr: Optional[float] = typer.Option(None, help="phatgoose: the gates' learning rate (default 1e-3)"),
              seed: Optional[int] = typer.Option(None, min=0, help="mhr: the batches' order and the routing's "
                                                 "samples; lorahub: CMA-ES's draws (default 0). A few examples make "
                                                 "the result vary with it: try several"),
              finetune_steps: Optional[int] = typer.Option(None, min=1, help="lorahub: then fine-tune the "
                                                           "weighted adapter's factors on the same examples for "
                                                           "this many steps (the k-shot LoRA's recipe; --seed "
                                                           "orders the batches). Reaches answers no adapter knows")
              ) -> None:
        """Route each token of BASE to the adapters whose update it aligns with most (Arrow), or whose gates,
        trained on each adapter's own text, it aligns with most (PHATGOOSE), or mix them per head block as a new
        task's examples teach (MHR), and write the routed model (load it with
        taskfuse.routing.store.load_routed(OUT)); or weigh the adapters for a new task from its examples (LoraHub)
        and write one PEFT adapter."""
        from ..io.output import check_output_dir
        from ..routing.arrow import ArrowRouter
        from ..routing.library import LoraLibrary
        from ..routing.modules import route as attach
        from ..routing.store import _load_base, save_routed
        try:
            if router not in ("arrow", "phatgoose", "lorahub", "mhr"):
                raise UsageError(f"router {router!r}: `taskfuse route` builds arrow (training-free), phatgoose "
                                 "(gates from each adapter's text), lorahub and mhr (from a new task's examples); "
                                 "Twin-Merging runs in `taskfuse bench --routing`.")
            given = {"--top-k": top_k, "--temperature": temperature, "--data": data, "--budget": budget, "--l1": l1,
                     "--steps": steps, "--heads": heads, "--skills": skills or None, "--lr": lr, "--seed": seed,
                     "--finetune-steps": finetune_steps}
            unused = [o for o, v in given.items() if v is not None and router not in TAKEN_BY[o]]
            if unused:  # an option another router reads would otherwise be ignored without a word
                raise UsageError(f"{router} does not take {', '.join(unused)} ("
                                 + "; ".join(f"{o}: {'/'.join(TAKEN_BY[o])}" for o in unused) + ").")
            if router != "arrow" and not data:
                raise UsageError(f"{router} needs --data: " + ("NAME=FILE.jsonl for each adapter." if
                                                              router == "phatgoose" else "the new task's examples, "
                                                              "one FILE.jsonl."))
            if temperature is not None and temperature <= 0:
                raise UsageError(f"--temperature {temperature}: give a positive temperature, e.g. 1.0.")
            named = dict(_named(a) for a in adapter)
            if len(named) != len(adapter):
                raise UsageError("two adapters share a name: give each a distinct NAME=PATH.")
            if router == "lorahub":  # an adapter, not a routed model: it checks its own output folder
                given_search = {"budget": budget, "l1": l1, "seed": seed}  # the rest as LoraHubSearch's defaults
                _lorahub(base, named, _one(data, router), out, {k: v for k, v in given_search.items() if v is not None},
                         finetune_steps)
                return
            check_output_dir(out, "routed")
            if router == "phatgoose":
                from ..bench.routing_rows import PHATGOOSE_TOP_K
                from ..programs.phatgoose_gates import GATE_LR, GATE_STEPS
                library = _phatgoose(base, named, _named_data(data), out, top_k or PHATGOOSE_TOP_K,
                                     steps or GATE_STEPS, lr or GATE_LR)
            elif router == "mhr":
                from ..programs.mhr_new_task import MHR_HEADS, MHR_STEPS
                library = _mhr(base, named, _one(data, router), out, steps or MHR_STEPS, heads or MHR_HEADS, skills,
                               seed or 0)
            else:
                library = LoraLibrary.from_adapters(base, named)
                top_k = top_k or 3
                model = attach(_load_base(base), library, lambda name, updates, module: ArrowRouter.for_updates(
                    updates, module.in_features, top_k, temperature or 1.0))
                save_routed(model, library, "arrow", {"top_k": top_k, "temperature": temperature or 1.0}, out)
        except TaskfuseError as e:
            fail(e)
        kind = {"phatgoose": "PHATGOOSE", "mhr": "MHR adapted to the new task", "arrow": "Arrow"}[router]
        console.print(f"wrote {out}: {kind} over {len(library.experts)} adapters ({', '.join(library.experts)}), "
                      f"{len(library.modules)} routed modules, +{library.parameters_count()} parameters; load it "
                      "with taskfuse.routing.store.load_routed", soft_wrap=True)


def _phatgoose(base: str, adapters: dict[str, str], data: dict[str, str], out: Path, top_k: int, steps: int,
               lr: float):
    """Train each adapter's gates on its --data and write the PHATGOOSE model; the library, for the summary."""
    from ..programs.library_text import causal_lm_loader, pad_id, tokenizer_of
    from ..programs.phatgoose_gates import (GATE_BATCH, data_seen, phatgoose_model, read_library_data,
                                            train_library_gates)
    from ..routing.library import LoraLibrary
    from ..routing.store import save_routed
    from .progress import progress_display
    if lr <= 0:
        raise UsageError(f"--lr {lr}: give a positive learning rate, e.g. 1e-3.")
    load_base = causal_lm_loader(base)
    library = LoraLibrary.from_adapters(base, adapters)
    tok = tokenizer_of(base)
    examples = read_library_data(library, data, tok)
    with progress_display(console) as bars:
        bar = bars.add_task("", total=steps * len(library.experts), stage="phatgoose gates")
        done = {}

        def progress(expert: str, step: int, loss: float) -> None:
            done[expert] = step
            bars.update(bar, completed=sum(done.values()), description=f"{expert} step {step} loss {loss:.4f}")

        gates, record = train_library_gates(load_base, library, examples, pad_id(tok), steps, GATE_BATCH, lr,
                                            progress=progress)
    model = phatgoose_model(load_base, library, gates, top_k)
    save_routed(model, library, "phatgoose", {"top_k": top_k}, out,
                extra={"data_seen": data_seen(examples, steps, GATE_BATCH), "gate_training": record, "lr": lr})
    return library


def _one(data: list[str], router: str) -> str:
    if len(data) != 1:
        raise UsageError(f"{router} learns from one new task's examples: give one --data FILE.jsonl, not "
                         f"{len(data)}.")
    return data[0]


def _mhr(base: str, adapters: dict[str, str], data: str, out: Path, steps: int, heads: int, skills: bool,
         seed: int):
    """Adapt MHR's routing (and with `skills` the factors) to the new task's examples and write the routed model."""
    from ..programs.library_text import causal_lm_loader, tokenizer_of
    from ..programs.mhr_new_task import adapted_mhr
    from ..routing.library import LoraLibrary
    from ..routing.store import save_routed
    from .progress import progress_display
    load_base = causal_lm_loader(base)
    library = LoraLibrary.from_adapters(base, adapters)
    with progress_display(console) as bars:
        bar = bars.add_task("", total=steps, stage="mhr adaptation")
        model, record = adapted_mhr(load_base, library, tokenizer_of(base), data, steps, heads, skills,
                                    progress=lambda done, loss: bars.update(bar, completed=done,
                                                                            description=f"loss {loss:.4f}"),
                                    seed=seed)
    save_routed(model, library, "mhr", {"heads": heads, "tasks": 1}, out, extra=record)
    return library


def _lorahub(base: str, adapters: dict[str, str], data: str, out: Path, search: dict,
             finetune_steps: int | None = None) -> None:
    import json
    import tempfile

    from ..io.output import check_output_dir
    from ..programs.adapter_finetune import finetuned_adapter
    from ..programs.lorahub_adapter import lorahub_adapter
    from ..programs.merge_to_adapter import REPORT
    from ..routing.lorahub import LoraHubSearch
    from .adapter_loading import how_to_load
    from .progress import progress_display
    how = LoraHubSearch(**search)
    check_output_dir(out, "adapter")  # before the search, not after it
    with tempfile.TemporaryDirectory(prefix="taskfuse-lorahub-") as work, progress_display(console) as bars:
        # with fine-tuning, the weighted adapter is only its start: written aside, the output is the tuned one
        weighted = Path(work) / "weighted" if finetune_steps else out
        bar = bars.add_task("", total=how.budget, stage="lorahub search")
        report = lorahub_adapter(base, adapters, data, weighted, how,
                                 lambda done, loss: bars.update(bar, completed=done, description=f"loss {loss:.4f}"))
        found = report["lorahub"]
        if not report["written"]:
            raise UsageError(f"no weighting of the {len(found['weights'])} adapters beat the base on {data} (loss "
                             f"{found['objective_at_start']:.4f} with none) in {found['evaluations']} evaluations, "
                             "so there is no adapter to write. Fix: give more examples, or a larger --budget"
                             + (", or train a LoRA from scratch on them." if finetune_steps else "."))
        if finetune_steps:
            bar = bars.add_task("", total=finetune_steps, stage="fine-tuning")
            tuned = finetuned_adapter(base, weighted, data, out, finetune_steps, how.seed,
                                      lambda done, loss: bars.update(bar, completed=done,
                                                                     description=f"loss {loss:.4f}"),
                                      extra=json.loads((weighted / REPORT).read_text()))
    weights = ", ".join(f"{name} {w:+.3f}" for name, w in found["weights"].items())
    tuning = (f"; then fine-tuned for {finetune_steps} steps (loss {tuned['finetune']['losses'][0]:.4f} → "
              f"{tuned['finetune']['losses'][-1]:.4f})" if finetune_steps else "")
    console.print(f"wrote the adapter {out}: LoraHub weights {weights}; objective {found['objective']:.4f} against "
                  f"{found['objective_at_start']:.4f} for the base, {found['evaluations']} evaluations{tuning}. Load "
                  f"it with {how_to_load(out)}", soft_wrap=True)


def _named_data(data: list[str]) -> dict[str, str]:
    named = {}
    for spec in data:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--data {spec!r}: write NAME=FILE.jsonl, NAME the adapter's (as in --adapter "
                             "NAME=PATH, or its folder's name).")
        if name in named:
            raise UsageError(f"--data names {name!r} twice: give one file per adapter.")
        named[name] = path
    return named


def _named(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    return (name, path) if sep else (Path(spec).name, spec)
