"""The LLM benchmark's rows that serve each question with a model made for one task, as the encoder routing study's
EMR-Merging and Twin-Merging rows do (routing/emr.py, routing/twin.py):

- EMR-Merging: one elected vector from the experts' full-weight updates, per task a mask and a rescaler; the
  task's identity picks them (data-free);
- Twin-Merging: the shared merge (the bench's task arithmetic, at the scale validation chose) plus each task's
  exclusive part θ_t − θ*, truncated to rank 32 by SVD; served either by the task's identity, or by a router on
  the shared model's mean hidden state over the prompt, trained on train questions labelled only by their task.

Every task's model is folded into dense weights (θ* + B_t·A_t): the same function as adding the part at each
linear layer's output, and the base's cost per token. Our router sends each question to its top-1 part; the paper
mixes the parts by the router's softmax, which a decoder with one key/value cache per batch cannot serve without a
model per question (say so in the docs)."""
from __future__ import annotations

import time
from dataclasses import asdict, replace

import torch
from torch import nn

from .evaluate import evaluate, prompt_ids

EMR_ROW = "emr-merging (task identity given: its mask and rescaler over one elected vector)"
TWIN_ROW = "twin-merging (router on the prompt, top-1: task_arithmetic plus that task's rank-32 part)"
TWIN_GIVEN_ROW = "twin-merging (task identity given: task_arithmetic plus its rank-32 part)"
TWIN_RANK = 32
ROUTER_EXAMPLES = 64  # train questions per task, as the MoE's router tuning and aTLAS read


def full_states(judge, tasks, experts) -> dict[str, dict[str, torch.Tensor]]:
    """Each expert's full-weight state (base + its LoRA update), in the tasks' order."""
    return {t.name: judge.load_adapter(experts[t.name].adapter).state_dict() for t in tasks}


def scores_with(judge, model: nn.Module, tasks, states: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict]:
    """Each task's test scores with its own state loaded into `model`."""
    scores = {}
    for task in tasks:
        model.load_state_dict(states[task.name])
        scores[task.name] = asdict(evaluate(model, judge.tok, task, "test"))
    return scores


def emr_row(judge, tasks, states: dict[str, dict[str, torch.Tensor]]) -> tuple[dict, dict]:
    """EMR-Merging's row from the experts' full-weight states (`full_states`)."""
    from ..routing.emr import task_models
    begun = time.perf_counter()
    model = judge.load(judge.base)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    names = [n for n, v in base.items() if any(not torch.equal(s[n], v) for s in states.values())]
    models = task_models(base, states, names)
    prepared = time.perf_counter() - begun
    changed = sum(base[n].numel() for n in names)
    summary = {"tensors": len(names), "seconds_to_prepare": round(prepared, 1),
               # the elected vector in float32, and a one-bit mask per task (32 to a float32 word)
               "extra_parameters_float32": round((changed + len(tasks) * changed / 32) / parameter_count(model), 3),
               "data_seen": "none; the task's identity picks its mask and rescaler"}
    return scores_with(judge, model, tasks, models), summary


def twin_rows(judge, tasks, states: dict[str, dict[str, torch.Tensor]], shared_dir,
              shared: dict) -> tuple[dict, dict]:
    """Both Twin-Merging rows (router top-1, task given) from one shared model and one set of exclusive parts of
    the experts' full-weight states (`full_states`)."""
    from ..routing.twin import train_router
    begun = time.perf_counter()
    model, shared_state, folded, extra = twin_models(judge, states, shared_dir)
    svd_seconds = time.perf_counter() - begun
    features = {t.name: prompt_features(model, judge.tok, [e.prompt for e in t.splits["train"][:ROUTER_EXAMPLES]])
                for t in tasks}
    router = train_router(torch.cat(list(features.values())),
                          torch.cat([torch.full((len(f),), i) for i, f in enumerate(features.values())]), len(tasks))
    given = scores_with(judge, model, tasks, folded)
    routed, picks = routed_scores(judge, model, tasks, folded, router, shared_state, given)
    common = {"shared": shared, "rank": TWIN_RANK, "seconds_to_prepare": round(svd_seconds, 1),
              "extra_parameters": round(extra / parameter_count(model), 3)}
    summaries = {TWIN_ROW: {**common, "router_test_picks": picks,
                            "data_seen": f"{ROUTER_EXAMPLES} train questions per task, labelled only by their task "
                                         "(router); no answers"},
                 TWIN_GIVEN_ROW: {**common, "data_seen": "none; the task's identity picks its exclusive part"}}
    return {TWIN_ROW: routed, TWIN_GIVEN_ROW: given}, summaries


def twin_models(judge, states: dict[str, dict[str, torch.Tensor]], shared_dir, rank: int = TWIN_RANK):
    """The shared model (holding its own weights), its state, each task's state with its rank-`rank` exclusive
    part folded in, and how many numbers the parts hold."""
    model = judge.load(shared_dir)
    shared_state = {k: v.clone() for k, v in model.state_dict().items()}
    linear = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    generator = torch.Generator().manual_seed(0)
    folded, numbers = {}, 0
    for task, state in states.items():
        folded[task] = dict(shared_state)
        for name in linear:
            difference = state[name].float() - shared_state[name].float()
            if difference.any():
                b, a = exclusive_part(difference, rank, generator)
                folded[task][name] = shared_state[name] + b @ a
                numbers += a.numel() + b.numel()
    return model, shared_state, folded, numbers


def exclusive_part(difference: torch.Tensor, rank: int, generator: torch.Generator,
                   width: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The best rank-`rank` factors (B = U·S, A = Vᵀ) of θ_t − θ*, as routing/twin.py's exclusive_library takes them.
    A difference of LoRA experts has low rank (at most their ranks summed: 48 for six rank-8 experts), so its range
    is that of `width` random combinations of its columns and one SVD of a width × n matrix gives the same factors
    (what that range leaves out of SmolLM2's differences is float32 round-off: 0.4-3.4e-5 of their norm, where the
    rank-32 truncation drops 2e-3 to 2e-2). Where it leaves out more than 1e-4 (a full fine-tune's difference), the
    full SVD is taken. Six tasks' 210 full SVDs took three minutes here."""
    if min(difference.shape) > width:
        q, _ = torch.linalg.qr(difference @ torch.randn(difference.shape[1], width, generator=generator))
        core = q.T @ difference
        if torch.linalg.matrix_norm(difference - q @ core) <= 1e-4 * torch.linalg.matrix_norm(difference):
            u, s, vh = torch.linalg.svd(core, full_matrices=False)
            return (q @ u[:, :rank]) * s[:rank], vh[:rank].contiguous()
    u, s, vh = torch.linalg.svd(difference, full_matrices=False)
    return (u[:, :rank] * s[:rank]).contiguous(), vh[:rank].contiguous()


@torch.inference_mode()
def prompt_features(model, tok, prompts: list[str], batch: int = 16) -> torch.Tensor:
    """The model's last hidden state averaged over each chat-formatted prompt's tokens, normalised: what the
    router sees."""
    from .decoding import left_padded, pad_id
    rows = []
    for start in range(0, len(prompts), batch):
        ids, mask, positions = left_padded([prompt_ids(tok, p) for p in prompts[start:start + batch]], pad_id(tok))
        hidden = model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        rows.append(nn.functional.normalize(pooled.float(), dim=-1))
    return torch.cat(rows)


def routed_scores(judge, model, tasks, folded: dict, router: nn.Module, shared_state: dict,
                  given: dict[str, dict]) -> tuple[dict[str, dict], dict[str, dict[str, float]]]:
    """Each test question answered by the model of the task the router picks for it; and per task, the share of
    its questions sent to each task's part. A task whose questions all go to its own part scores what it scores
    told the task (`given`): the same model on the same questions."""
    names = [t.name for t in tasks]
    model.load_state_dict(shared_state)
    picked = {t.name: router(prompt_features(model, judge.tok, [e.prompt for e in t.splits["test"]])).argmax(1)
              for t in tasks}
    scores, picks = {}, {}
    for task in tasks:
        if bool((picked[task.name] == names.index(task.name)).all()):
            scores[task.name], picks[task.name] = given[task.name], {task.name: 1.0}
            continue
        em = ll = 0
        for j, target in enumerate(names):
            chosen = tuple(e for e, p in zip(task.splits["test"], picked[task.name].tolist()) if p == j)
            if chosen:
                model.load_state_dict(folded[target])
                score = evaluate(model, judge.tok, replace(task, splits={**task.splits, "test": chosen}), "test")
                em += round(score.exact_match * len(chosen))  # counts: the subsets' fractions times their sizes
                ll += round(score.likelihood_accuracy * len(chosen))
        n = len(task.splits["test"])
        scores[task.name] = {"exact_match": em / n, "likelihood_accuracy": ll / n, "n": n}
        shares = torch.bincount(picked[task.name], minlength=len(names)).float() / n
        picks[task.name] = {names[j]: round(float(s), 3) for j, s in enumerate(shares) if s > 0}
    return scores, picks


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights counted once, as the model holds them
