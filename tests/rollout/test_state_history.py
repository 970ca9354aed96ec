"""The recent states of an episode reach the policy the way the training data holds them."""

from __future__ import annotations

import numpy as np
import pytest

from vla_train.rollout import RolloutEnv, StateHistoryEnv


class CountingEnv:
    """State = the step count; the policy input also counts how often it was computed."""

    fps = 10

    def __init__(self) -> None:
        self.t, self.inputs_computed = 0, 0

    def reset(self, spec):
        self.t = 0
        return {"t": 0}

    def step(self, action):
        self.t += 1
        return {"t": self.t}, False, False

    def policy_input(self, observation):
        self.inputs_computed += 1
        state = np.array([observation["t"], -observation["t"]], dtype=np.float32)
        return {"images": np.zeros((1, 3, 4, 4), np.float32), "state": state, "instruction": "count"}

    def env_action(self, action):
        return action

    def render(self):
        return np.zeros((4, 4, 3), np.uint8)

    def close(self) -> None: ...


def test_history_pads_with_the_first_state_and_keeps_the_current_last() -> None:
    inner = CountingEnv()
    env = StateHistoryEnv(inner, 3)
    assert isinstance(env, RolloutEnv) and env.fps == 10
    observation = env.reset(spec=None)
    assert env.policy_input(observation)["state"][:, 0].tolist() == [0, 0, 0]
    for _ in range(4):  # a chunk executed open-loop: the policy sees none of these steps
        observation, _, _ = env.step(np.zeros(2))
    inputs = env.policy_input(observation)
    assert inputs["state"].shape == (3, 2) and inputs["state"][:, 0].tolist() == [2, 3, 4]
    assert inner.inputs_computed == 5  # once per observation, not again for the policy call
    env.reset(spec=None)
    assert env.policy_input({"t": 0})["state"][:, 0].tolist() == [0, 0, 0]  # a new episode forgets


def test_history_length_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"env\.state_history"):
        StateHistoryEnv(CountingEnv(), 0)
