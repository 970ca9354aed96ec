"""``env=droid``: a LeRobot dataset in the DROID layout (see :mod:`envs.droid.convert`) for training.

DROID is a real robot: there is no simulator to evaluate in. The fine-tuned policy is served
(``scripts/serve.py``) and the robot laptop runs :mod:`envs.droid.client`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch

from envs.base import ACTION_KEY, STATE_KEY, EnvAdapter, TrainingData, camera_key
from envs.droid import spaces
from envs.droid.transforms import openpi_policy_input, policy_input
from vla_train.rollout import EpisodeSpec


class DroidAdapter(EnvAdapter):
    simulated = False  # a real robot: evaluated through the policy server (envs/droid/client.py)

    def training_data(self) -> TrainingData:
        self.check_spaces()
        return self.lerobot_training_data(self.cfg.dataset.root, self.cfg.dataset.episodes)

    def check_spaces(self) -> None:
        """The dataset's state and action must be the configured spaces (their names say which)."""
        from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

        features = LeRobotDatasetMetadata(self.cfg.dataset.repo_id, root=self.cfg.dataset.root).features
        spaces.check(self.cfg.state_space, self.cfg.action_space)
        for key, space, expected in (
            (STATE_KEY, f"env.state_space={self.cfg.state_space}", spaces.state_names(self.cfg.state_space)),
            (
                ACTION_KEY,
                f"env.action_space={self.cfg.action_space}",
                spaces.action_names(self.cfg.action_space),
            ),
        ):
            names = features.get(key, {}).get("names")
            if names is not None and list(names) != expected:
                raise ValueError(
                    f"the dataset's {key} is {names}, not {space} ({expected}): convert with the same "
                    "spaces (scripts/convert_droid.py --state/--action) or set env.state_space/action_space"
                )

    def sample_to_policy(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """A dataset frame → the policy input the robot client builds live (same function)."""
        exterior, wrist = (
            (sample[camera_key(camera)].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            for camera in self.cfg.cameras
        )
        state = sample[STATE_KEY].numpy()
        live = policy_input(exterior, wrist, state[:-1], state[-1:], sample["task"], self.cfg.image_size)
        return {
            "images": torch.from_numpy(live["images"]),
            "state": sample[STATE_KEY],
            "actions": sample[ACTION_KEY],
            "action_is_pad": sample[f"{ACTION_KEY}_is_pad"],
            "instruction": live["instruction"],
        }

    def openpi_inputs(self) -> functools.partial:
        """openpi's ``examples/droid/main.py`` observations (a robot laptop running openpi's client)."""
        spaces.check(self.cfg.state_space, self.cfg.action_space)
        return functools.partial(
            openpi_policy_input, size=int(self.cfg.image_size), state_space=str(self.cfg.state_space)
        )

    def evaluation_episodes(self) -> list[EpisodeSpec]:
        return []  # a real robot: evaluate with the policy server and envs/droid/client.py

    def make_env(self, task: str) -> Any:
        raise RuntimeError("DROID has no simulator: serve the policy (scripts/serve.py) to the robot laptop")
