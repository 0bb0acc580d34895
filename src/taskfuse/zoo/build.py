"""Building the zoo: each missing expert is trained once, written atomically, and found again by its key.

Several processes may build one zoo: a file lock per expert makes each train a different one, and an interrupted
build resumes at the first expert that has no finished folder.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from queue import Empty

import torch
from filelock import FileLock, Timeout
from safetensors.torch import save_file

from ..errors import ZooError
from ..eval.encoder import base_encoder_dir, encode, load_encoder, load_tokenizer, zero_shot_head
from ..eval.tasks import Task, load_task
from ..io.output import check_output_dir, staged_output
from ..terminate import exit_cleanly_on_sigterm
from .recipe import Recipe, ZooVariant
from .store import Expert, expert_dir, expert_key, find_expert
from .train import fine_tune, prepare_full, prepare_lora

WORKER_POLL_SECONDS = 1.0  # how soon a dead worker is noticed
WORKER_EXIT_SECONDS = 30.0  # how long a stopped worker may take to remove its stage
# (task, stage, done, total): stage is "full", "lora", "done" or "cached".
ZooProgress = Callable[[str, str, int, int], None]


@dataclass(frozen=True)
class Zoo:
    base_dir: Path
    variant: ZooVariant
    tasks: dict[str, Task]
    experts: dict[str, Expert]


def train_expert(task: Task, base_dir: Path, recipe: Recipe, out: Path, progress: ZooProgress | None = None) -> None:
    """Train and write one expert into `out`, which must not exist; a failure leaves nothing behind."""
    check_output_dir(out, "expert")  # before minutes of training

    def report(stage: str):
        return (lambda done, total: progress(task.name, stage, done, total)) if progress else None

    tokenizer = load_tokenizer(base_dir)
    train = encode(tokenizer, task.splits["train"].texts, task.splits["train"].labels)
    started = time.perf_counter()
    head = zero_shot_head(load_encoder(base_dir), tokenizer, task.label_prompts(), recipe.logit_scale)
    torch.manual_seed(recipe.seed)
    full = prepare_full(load_encoder(base_dir), recipe)
    full_losses = fine_tune(full, head, train, recipe, recipe.lr, report("full"))
    lora = prepare_lora(load_encoder(base_dir), recipe)
    lora_losses = fine_tune(lora, head, train, recipe, recipe.lora_lr, report("lora"))
    with staged_output(out, "expert") as stage:
        full.save_pretrained(stage / "model", safe_serialization=True)
        tokenizer.save_pretrained(stage / "model")
        lora.save_pretrained(stage / "lora")
        save_file({"weight": head.weight.contiguous(), "bias": head.bias.contiguous()}, stage / "head.safetensors")
        info = {"task": task.name, "labels": list(task.label_names), "recipe": recipe.as_dict(),
                "train_examples": len(train.ids), "seconds": round(time.perf_counter() - started, 1),
                "final_loss": {"full": _tail_mean(full_losses), "lora": _tail_mean(lora_losses)},
                "torch": torch.__version__}
        (stage / "expert.json").write_text(json.dumps(info, indent=1))


def _tail_mean(losses: list[float]) -> float:
    tail = losses[-max(1, len(losses) // 10):]
    return round(sum(tail) / len(tail), 4)


def build_zoo(variant: ZooVariant, workers: int = 1, progress: ZooProgress | None = None,
              task_files: tuple[str, ...] = ()) -> Zoo:
    """Load every expert of `variant` (plus users' task files), training the missing ones in `workers` processes."""
    base_dir = base_encoder_dir()
    tasks = {t.name: t for t in (load_task(n, variant.recipe.seed, variant.sizes) for n in variant.tasks + task_files)}
    keys = {name: expert_key(task, base_dir, variant.recipe) for name, task in tasks.items()}
    missing = [n for n in tasks if find_expert(tasks[n], keys[n]) is None]
    for name in tasks:
        if name not in missing and progress:
            progress(name, "cached", 1, 1)
    if missing:
        if workers > 1 and len(missing) > 1:
            _build_in_processes([tasks[n] for n in missing], base_dir, variant.recipe, workers, progress)
        else:
            for name in missing:
                _build_one(tasks[name], base_dir, variant.recipe, keys[name], progress, wait=True)
    experts = {n: find_expert(tasks[n], keys[n]) for n in tasks}
    return Zoo(base_dir, variant, tasks, experts)


def _build_one(task: Task, base_dir: Path, recipe: Recipe, key: str, progress: ZooProgress | None,
               wait: bool) -> bool:
    """Train unless finished or being trained elsewhere; with `wait`, wait for the other trainer instead."""
    out = expert_dir(task, key)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out) + ".lock")
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        return False
    try:
        if find_expert(task, key) is None:
            train_expert(task, base_dir, recipe, out, progress)
    finally:
        lock.release()
    if progress:
        progress(task.name, "done", 1, 1)
    return True


def _worker(index: int, tasks: list[Task], base_dir: Path, recipe: Recipe, threads: int, queue) -> None:
    exit_cleanly_on_sigterm()
    torch.set_num_threads(threads)
    try:
        pending = list(tasks)
        for wait in (False, True):  # first take what nobody holds, then wait for the rest
            pending = [t for t in pending if not _build_one(t, base_dir, recipe, expert_key(t, base_dir, recipe),
                                                            lambda *a: queue.put(("progress", index, a)), wait)]
    except BaseException as e:
        queue.put(("failed", index, f"{type(e).__name__}: {e}"))
        if isinstance(e, SystemExit):  # stopped (SIGTERM): exit without waiting to flush the queue, which can
            queue.cancel_join_thread()  # wait forever on the write lock of a worker killed in the middle of a put
        raise
    queue.put(("finished", index, None))


def _build_in_processes(tasks: list[Task], base_dir: Path, recipe: Recipe, workers: int,
                        progress: ZooProgress | None) -> None:
    """Train `tasks` in `workers` processes; the first worker that fails or dies fails the build with its error."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    threads = max(1, (os.cpu_count() or 2) // workers)
    procs = [ctx.Process(target=_worker, args=(i, tasks[i:] + tasks[:i], base_dir, recipe, threads, queue))
             for i in range(workers)]
    for p in procs:
        p.start()
    try:
        finished: set[int] = set()
        while len(finished) < len(procs):
            try:
                message = queue.get(timeout=WORKER_POLL_SECONDS)
            except Empty:
                _fail_if_a_worker_died(procs, finished, queue, progress)
                continue
            _handle(message, finished, progress)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: the worker removes its staging folder on the way out
        for p in procs:
            p.join(WORKER_EXIT_SECONDS)
            if p.is_alive():  # stuck on its way out: SIGKILL (the next build removes the stage it leaves)
                p.kill()
                p.join()


def _handle(message: tuple, finished: set[int], progress: ZooProgress | None) -> None:
    kind, index, payload = message
    if kind == "progress" and progress:
        progress(*payload)
    elif kind == "finished":
        finished.add(index)
    elif kind == "failed":
        raise ZooError(f"zoo worker {index} failed: {payload}. Experts it finished are kept; fix the cause and rerun "
                       "to resume (`--workers 1` shows the full error).")


def _fail_if_a_worker_died(procs: list, finished: set[int], queue, progress: ZooProgress | None) -> None:
    """A worker killed from outside (SIGKILL, the OOM killer) sends nothing: notice it by its exit status."""
    dead = [i for i, p in enumerate(procs) if i not in finished and not p.is_alive()]
    if not dead:
        return
    while True:  # what it sent before it died (its last message may be its "finished") comes first
        try:
            _handle(queue.get_nowait(), finished, progress)
        except Empty:
            break
    for i in dead:
        if i not in finished:
            code = procs[i].exitcode
            how = f"was killed by signal {-code}" if code and code < 0 else f"exited with status {code}"
            raise ZooError(f"zoo worker {i} {how} before finishing its experts (out of memory?). Experts already "
                           "finished are kept; rerun to resume, with fewer --workers if memory ran out.")
