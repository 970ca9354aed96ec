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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_train.progress import progress_bar
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
    results.check_same_protocol(specs)
    done = results.finished()
    schedule = EpisodeSchedule(deque(spec for spec in specs if spec.key not in done))
    if schedule.pending:
        video_path = Path(video_dir) if video_dir is not None else None
        workers = [
            EnvWorker(index, env_factory, video_path, worker_timeout)
            for index in range(min(num_workers, len(schedule.pending)))
        ]
        tally = Tally(results, total=len(schedule.pending), show=progress)
        try:
            _drive(workers, schedule, policy_fn, tally, replan_steps)
        finally:
            tally.close()
            for worker in workers:
                worker.close()
    return [record for record in results.records() if record["key"] in keys]


@dataclass
class EpisodeSchedule:
    """Which worker runs which episode, and the retry rule: a failed episode runs once more."""

    pending: deque[EpisodeSpec]
    running: dict[int, EpisodeSpec] = field(default_factory=dict)  # worker index → its episode
    tasks_held: dict[int, str] = field(default_factory=dict)  # worker index → its environment's task
    attempts: dict[str, int] = field(default_factory=dict)

    def busy(self) -> bool:
        return bool(self.pending or self.running)

    def start(self, worker: int) -> EpisodeSpec | None:
        """The next episode for an idle ``worker`` (None if it is busy or nothing is left)."""
        if worker in self.running or not self.pending:
            return None
        spec = self._next_episode(worker)
        self.tasks_held[worker] = spec.task
        self.attempts[spec.key] = self.attempts.get(spec.key, 0) + 1
        self.running[worker] = spec
        return spec

    def finish(self, worker: int) -> EpisodeSpec:
        return self.running.pop(worker)

    def fail(self, worker: int) -> EpisodeSpec | None:
        """The worker's episode failed: queued again if it has an attempt left, else returned to record."""
        spec = self.running.pop(worker)
        self.tasks_held.pop(worker, None)  # the worker dropped (or lost) its environment
        if self.attempts[spec.key] < MAX_ATTEMPTS:
            self.pending.appendleft(spec)
            return None
        return spec

    def _next_episode(self, worker: int) -> EpisodeSpec:
        """Keep workers on their task: building a LIBERO environment costs seconds, resetting it does not.

        First an episode of the task the worker's environment is built for, else one of a task no other
        worker holds, else the next in line.
        """
        others = {task for index, task in self.tasks_held.items() if index != worker}
        held = self.tasks_held.get(worker)
        for prefer in (lambda spec: spec.task == held, lambda spec: spec.task not in others):
            for position, spec in enumerate(self.pending):
                if prefer(spec):
                    del self.pending[position]
                    return spec
        return self.pending.popleft()


class Tally:
    """Records outcomes to the results file and shows successes and errors so far."""

    def __init__(self, results: ResultsFile, total: int, show: bool) -> None:
        self.results = results
        self.successes = self.finished = self.errors = 0
        self.bar = progress_bar(total, "evaluation", unit="episode", enabled=show)

    def record(self, spec: EpisodeSpec, attempts: int, **outcome: Any) -> None:
        self.results.append(spec, attempts=attempts, **outcome)
        self.finished += 1
        self.successes += bool(outcome.get("success"))
        self.errors += outcome.get("error") is not None
        self.bar.set_postfix(success=f"{self.successes}/{self.finished}", errors=self.errors)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _drive(
    workers: list[EnvWorker], schedule: EpisodeSchedule, policy_fn: PolicyFn, tally: Tally, replan_steps: int
) -> None:
    """Step every busy worker in lockstep until the schedule is empty (see the module docstring)."""
    waiting: dict[int, dict[str, Any]] = {}  # worker index → observation awaiting a chunk
    while schedule.busy():
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
            spec = schedule.start(worker.index)
            if spec is not None:
                sent[worker.index] = _send(worker, "reset", spec)
        for index, send_error in sent.items():  # the workers step in parallel until here
            kind, payload = ("error", send_error) if send_error else _receive(workers[index])
            if kind == "observation":
                waiting[index] = payload
            elif kind == "finished":
                spec = schedule.finish(index)
                tally.record(spec, schedule.attempts[spec.key], error=None, **payload)
            else:
                spec = schedule.fail(index)
                if spec is not None:
                    error = payload.strip().splitlines()[0]
                    tally.record(spec, schedule.attempts[spec.key], success=False, steps=0, seconds=0.0,
                                 video=None, error=error)  # fmt: skip


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
