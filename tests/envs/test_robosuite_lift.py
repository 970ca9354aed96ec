"""robosuite Lift: the expert solves it, and training samples and live observations share one layout."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose_train

from envs.robosuite.expert import LiftExpert
from vla_train.training import build_env_adapter

pytestmark = pytest.mark.slow


def test_scripted_expert_lifts_the_cube(tmp_path: Path) -> None:
    adapter = build_env_adapter(compose_train([], tmp_path).env)
    env = adapter.make_simulator(cameras=False)
    successes = 0
    try:
        for seed in range(3):
            np.random.seed(seed)
            observation = env.reset()
            expert = LiftExpert(noise=0.1, rng=np.random.default_rng(seed))
            expert.reset(observation)
            for _ in range(150):
                observation, *_ = env.step(expert.act(observation))
                if env._check_success():
                    successes += 1
                    break
    finally:
        env.close()
    assert successes == 3


def test_recording_refuses_a_directory_that_is_not_our_dataset(tmp_path: Path) -> None:
    """``generate=true`` (robosuite_lift's default) records only into a new or empty directory."""
    from vla_train.training import train

    users = tmp_path / "my_data"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    cfg = compose_train(
        [f"env.dataset.root={users}", "env.dataset.generate=true", "trainer=tiny", "logger=none"],
        tmp_path / "run",
    )
    with pytest.raises(FileExistsError, match=r"env\.dataset\.root=.*my_data.*nothing was changed"):
        train(cfg)
    assert [p.name for p in users.iterdir()] == ["notes.txt"]
    assert (users / "notes.txt").read_text() == "mine"


def test_dataset_samples_and_live_observations_match(lift_dataset: Path, tmp_path: Path) -> None:
    cfg = compose_train([f"env.dataset.root={lift_dataset}", "env.dataset.cache_in_memory=false"], tmp_path)
    adapter = build_env_adapter(cfg.env)
    data = adapter.training_data()
    sample = data.dataset[0]
    assert sample["images"].shape == (2, 3, 64, 64) and sample["actions"].shape == (cfg.env.chunk_size, 7)
    assert sample["instruction"] == "lift the red cube"
    first_demo = adapter.evaluation_episodes()[0]
    first_demo = dataclasses.replace(first_demo, seed=0)  # seed 0 is the first demonstration
    rollout = adapter.make_env(first_demo.task)
    try:
        live = rollout.policy_input(rollout.reset(first_demo))
        frame = rollout.render()
    finally:
        rollout.close()
    assert live["images"].shape == sample["images"].shape and live["state"].shape == sample["state"].shape
    assert live["images"].dtype == np.float32 and sample["images"].dtype == torch.float32
    # the first recorded frame is the same scene: same state, near-identical images
    torch.testing.assert_close(torch.from_numpy(live["state"]), sample["state"], atol=1e-4, rtol=0)
    assert np.abs(live["images"] - sample["images"].numpy()).mean() < 0.02
    assert frame.shape == (64 * 4, 2 * 64 * 4, 3)
