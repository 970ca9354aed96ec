"""Simulator-free rollout environments for evaluator tests (importable by spawned env workers)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vla_train.rollout import EpisodeSpec


class CountingEnv:
    """The state counts up by the first action component; success once it reaches ``goal``.

    Task names select failure modes: ``raise`` raises in ``step``; ``exit`` kills the worker process
    in ``reset``; ``flaky`` raises in ``reset`` the first time only (a marker file remembers).
    """

    fps = 10

    def __init__(self, task: str, marker_dir: str | None, goal: float = 3.0) -> None:
        self.task, self.marker_dir, self.goal = task, marker_dir, goal
        self.value = 0.0

    def reset(self, spec: EpisodeSpec) -> float:
        if self.task.startswith("exit"):
            os._exit(3)
        if self.task.startswith("flaky"):
            marker = Path(self.marker_dir) / f"{spec.key.replace('/', '_')}.seen"
            if not marker.exists():
                marker.touch()
                raise RuntimeError("unstable simulation")
        self.value = float(spec.seed % 2)  # odd seeds start one step closer to the goal
        return self.value

    def step(self, action: np.ndarray) -> tuple[float, bool, bool]:
        if self.task.startswith("raise"):
            raise FloatingPointError("physics diverged")
        self.value += float(action[0])
        return self.value, self.value >= self.goal, False

    def policy_input(self, observation: float) -> dict:
        return {
            "images": np.zeros((1, 3, 4, 4), np.float32),
            "state": np.array([observation], np.float32),
            "instruction": self.task,
        }

    def env_action(self, action: np.ndarray) -> np.ndarray:
        return np.clip(action, -1.0, 1.0)

    def render(self) -> np.ndarray:
        return np.full((16, 16, 3), int(10 * self.value) % 255, np.uint8)

    def close(self) -> None:
        pass


def make_counting_env(marker_dir: str | None, task: str) -> CountingEnv:
    return CountingEnv(task, marker_dir)


def make_exploding_libero_env(settings, failing_task: str, task: str):
    """A real LIBERO env whose physics "diverges" on ``failing_task`` (the error path of the evaluator)."""
    from envs.libero.env import LiberoRolloutEnv

    class ExplodingLibero(LiberoRolloutEnv):
        def step(self, action):
            if task == failing_task:
                raise RuntimeError("simulation became unstable")
            return super().step(action)

    return ExplodingLibero(task, settings)


class Unrenderable(CountingEnv):
    """A rollout env that forgot part of the :class:`~vla_train.rollout.RolloutEnv` protocol."""

    render = None  # type: ignore[assignment]

    def __getattribute__(self, name: str):
        if name == "render":
            raise AttributeError(name)
        return super().__getattribute__(name)


def make_unrenderable_env(task: str) -> Unrenderable:
    return Unrenderable(task, None)
