"""The recent states a policy with ``env.state_history`` > 1 sees, kept where the steps happen.

Env workers execute a whole action chunk between policy calls, so the states in between never reach
the policy process: the wrapper records each step's state beside the simulator and hands the policy
``(history, S)`` — the current state last, the episode's first state repeated before its start, as
the training data (lerobot clamps to the episode) and VLANeXt's evaluation both pad.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np


class StateHistoryEnv:
    """Any rollout env, its policy inputs' ``state`` widened to the last ``length`` states."""

    def __init__(self, env: Any, length: int) -> None:
        if length < 1:
            raise ValueError(f"env.state_history must be >= 1, got {length}")
        self.env, self.length = env, length
        self.states: deque[np.ndarray] = deque(maxlen=length)
        self._latest: tuple[Any, dict[str, Any]] | None = None

    def reset(self, spec: Any) -> Any:
        observation = self.env.reset(spec)
        first = self._input(observation)["state"]
        self.states.clear()
        self.states.extend([first] * self.length)
        return observation

    def step(self, action: np.ndarray) -> tuple[Any, bool, bool]:
        observation, success, done = self.env.step(action)
        self.states.append(self._input(observation)["state"])
        return observation, success, done

    def policy_input(self, observation: Any) -> dict[str, Any]:
        return {**self._input(observation), "state": np.stack(self.states)}

    def _input(self, observation: Any) -> dict[str, Any]:
        """The wrapped env's input for ``observation``, computed once per observation."""
        if self._latest is None or self._latest[0] is not observation:
            self._latest = (observation, self.env.policy_input(observation))
        return self._latest[1]

    def __getattr__(self, name: str) -> Any:  # env_action, render, close, fps, instruction, …
        return getattr(self.env, name)


def with_state_history(factory: Callable[[str], Any], length: int, task: str) -> StateHistoryEnv:
    """``factory(task)`` with the last ``length`` states per input; picklable through
    ``functools.partial(with_state_history, factory, length)`` for spawned env workers."""
    return StateHistoryEnv(factory(task), length)
