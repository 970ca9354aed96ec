"""Run a list of episodes on N env workers with one batched policy call per decision step.

All busy workers advance in lockstep: each gets the next ``replan_steps`` actions of its chunk, the
evaluator collects the observations of the workers still running, and the policy runs once on that
batch. A worker that finishes starts its next episode at once and joins the next batch.

Failures never vanish: an episode whose worker reports an error or dies is retried once (a dead
worker is restarted first), then recorded with the error.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from vla_train.rollout.episodes import EpisodeSpec, ResultsFile
from vla_train.rollout.worker import EnvFactory, EnvWorker, WorkerDied

#: ``policy_fn(inputs) -> (B, chunk, A)``: a batch of policy inputs → action chunks.
PolicyFn = Callable[[list[dict[str, Any]]], np.ndarray]

MAX_ATTEMPTS = 2


def run_episodes(
    specs: Sequence[EpisodeSpec],
    env_factory: EnvFactory,
    policy_fn: PolicyFn,
    results: ResultsFile,
    num_workers: int = 1,
    replan_steps: int = 8,
    video_dir: str | Path | None = None,
    worker_timeout: float = 600.0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run the ``specs`` not yet in ``results``; returns every record of ``results`` for ``specs``.

    Args:
        env_factory: picklable ``task -> rollout env`` (see :mod:`vla_train.rollout.worker`).
        policy_fn: batch of policy inputs → ``(B, chunk, A)`` action chunks (policy units).
        replan_steps: actions executed open-loop from each chunk before the policy runs again.
        worker_timeout: seconds a worker may take to answer before it is restarted.
    """
    if replan_steps < 1:
        raise ValueError(f"replan_steps must be >= 1, got {replan_steps}")
    keys = {spec.key for spec in specs}
    if len(keys) != len(specs):
        raise ValueError("episode specs must have unique (task, trial) keys")
    done = results.finished()
    pending = deque(spec for spec in specs if spec.key not in done)
    if pending:
        _run(
            pending,
            env_factory,
            policy_fn,
            results,
            num_workers,
            replan_steps,
            video_dir,
            worker_timeout,
            progress,
        )
    return [record for record in results.records() if record["key"] in keys]


def _run(
    pending: deque[EpisodeSpec],
    env_factory: EnvFactory,
    policy_fn: PolicyFn,
    results: ResultsFile,
    num_workers: int,
    replan_steps: int,
    video_dir: str | Path | None,
    worker_timeout: float,
    show_progress: bool,
) -> None:
    video_path = Path(video_dir) if video_dir is not None else None
    workers = [
        EnvWorker(index, env_factory, video_path, worker_timeout)
        for index in range(min(num_workers, len(pending)))
    ]
    attempts: dict[str, int] = {}
    running: dict[int, EpisodeSpec] = {}  # worker index → its episode
    tasks_held: dict[int, str] = {}  # worker index → the task its environment is built for
    successes = finished = errors = 0
    bar = tqdm(total=len(pending), desc="episodes", dynamic_ncols=True, disable=not show_progress)

    def record(spec: EpisodeSpec, **outcome: Any) -> None:
        nonlocal successes, finished, errors
        results.append(spec, attempts=attempts.get(spec.key, 1), **outcome)
        finished += 1
        successes += bool(outcome.get("success"))
        errors += outcome.get("error") is not None
        bar.update(1)
        bar.set_postfix(success=f"{successes}/{finished}", errors=errors)

    def failed(worker: EnvWorker, error: str) -> None:
        """Retry the worker's episode once, else record it as an error."""
        spec = running.pop(worker.index)
        tasks_held.pop(worker.index, None)  # the worker dropped (or lost) its environment
        if attempts[spec.key] < MAX_ATTEMPTS:
            pending.appendleft(spec)
        else:
            record(spec, success=False, steps=0, seconds=0.0, video=None, error=error.strip().splitlines()[0])

    waiting: dict[int, dict[str, Any]] = {}  # worker index → observation awaiting a chunk
    try:
        while pending or running:
            sent: dict[int, str | None] = {}  # worker index → error when the command could not be sent
            if waiting:
                order = sorted(waiting)
                chunks = np.asarray(policy_fn([waiting[index] for index in order]))
                if chunks.ndim != 3 or chunks.shape[0] != len(order):
                    raise ValueError(
                        f"policy_fn returned shape {chunks.shape}, expected ({len(order)}, chunk, action)"
                    )
                waiting = {}
                for index, chunk in zip(order, chunks, strict=True):
                    sent[index] = _send(workers[index], "act", chunk[:replan_steps])
            for worker in workers:
                if worker.index not in running and pending:
                    spec = _next_episode(pending, worker.index, tasks_held)
                    tasks_held[worker.index] = spec.task
                    attempts[spec.key] = attempts.get(spec.key, 0) + 1
                    running[worker.index] = spec
                    sent[worker.index] = _send(worker, "reset", spec)
            for index, send_error in sent.items():  # the workers step in parallel until here
                worker = workers[index]
                kind, payload = ("error", send_error) if send_error else _receive(worker)
                if kind == "observation":
                    waiting[index] = payload
                elif kind == "finished":
                    record(running.pop(index), error=None, **payload)
                else:
                    failed(worker, payload)
    finally:
        bar.close()
        for worker in workers:
            worker.close()


def _next_episode(pending: deque[EpisodeSpec], worker: int, tasks_held: dict[int, str]) -> EpisodeSpec:
    """Keep workers on their task: building a LIBERO environment costs seconds, resetting it does not.

    First an episode of the task the worker's environment is built for, else one of a task no other
    worker holds, else the next in line.
    """
    others = {task for index, task in tasks_held.items() if index != worker}
    for prefer in (lambda spec: spec.task == tasks_held.get(worker), lambda spec: spec.task not in others):
        for position, spec in enumerate(pending):
            if prefer(spec):
                del pending[position]
                return spec
    return pending.popleft()


def _send(worker: EnvWorker, command: str, payload: Any) -> str | None:
    try:
        worker.send(command, payload)
        return None
    except WorkerDied as died:
        worker.restart()
        return str(died)


def _receive(worker: EnvWorker) -> tuple[str, Any]:
    try:
        return worker.receive()
    except WorkerDied as died:
        worker.restart()
        return "error", str(died)
