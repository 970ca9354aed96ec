"""``env=libero_*``: LIBERO's LeRobot training data and its standard evaluation protocol.

Training data: a LeRobot dataset in the layout of ``lerobot/libero`` (MP4 video; ``HuggingFaceVLA/libero``
holds the same data as PNG frames; all four suites, 40 tasks: ``observation.images.image`` agent view,
``observation.images.image2`` wrist, 8-D ``observation.state``, 7-D ``action``, 10 fps), restricted to the
episodes of the configured suite.
Normalization statistics are the dataset's (all suites), as VLANeXt's "mixed" statistics.

Evaluation: ``eval.episodes`` trials per task from the task's fixed initial states 0, 1, …, each with
``eval.seed``; ``eval.max_steps`` per suite; see :mod:`envs.libero.env` for the episode protocol.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from envs.base import ACTION_KEY, EnvAdapter, TrainingData
from envs.libero.env import (
    LiberoRolloutEnv,
    LiberoSettings,
    make_libero_env,
    protocol_episodes,
    suite_tasks,
)
from envs.libero.runtime import suite_instructions
from envs.libero.transforms import LIBERO_STATE_DIM, LiberoTransforms
from vla_train.rollout import EpisodeSpec


class LiberoAdapter(EnvAdapter):
    motion_dims = 6  # LIBERO's actions: the end-effector delta (position, axis-angle), then the gripper

    @functools.cached_property
    def settings(self) -> LiberoSettings:
        sim = self.cfg.simulator
        return LiberoSettings(
            camera_size=sim.camera_size,
            num_steps_wait=sim.num_steps_wait,
            hard_reset=sim.hard_reset,
            assets_dir=sim.assets_dir,
            config_dir=sim.config_dir,
            fps=sim.control_fps,
            cameras=tuple(self.cfg.cameras),
            state_layout=str(self.cfg.get("state_layout", "dataset")),
        )

    @functools.cached_property
    def transforms(self) -> LiberoTransforms:
        return LiberoTransforms(tuple(self.cfg.cameras), str(self.cfg.get("state_layout", "dataset")))

    @functools.cached_property
    def tasks(self) -> list[tuple[int, str, int]]:
        """``(index, instruction, initial states)`` of the suite's tasks (all, or ``eval.tasks``)."""
        tasks = suite_tasks(self.cfg.simulator.suite, self.settings)
        chosen = self.cfg.eval.get("tasks")
        if chosen is None:
            return tasks
        unknown = sorted(set(chosen) - {index for index, _, _ in tasks})
        if unknown:
            raise ValueError(
                f"env.eval.tasks={list(chosen)}: {self.cfg.simulator.suite} has no task {unknown}; its tasks "
                f"are 0..{len(tasks) - 1} (or env.eval.tasks=null for all)"
            )
        return [task for task in tasks if task[0] in set(chosen)]

    # ------------------------------------------------------------------------------------------ data
    def dataset_state_dim(self) -> int:
        return LIBERO_STATE_DIM  # the datasets' 8-D state, whatever the policy's layout

    def training_data(self) -> TrainingData:
        layout = self.transforms.state_layout
        if layout != "dataset" and self.cfg.get("state_normalization") != "identity":
            raise ValueError(
                f"env.state_layout={layout} derives the policy's state from the dataset's, whose statistics "
                "no longer apply: set env.state_normalization=identity (fed raw, as VLANeXt's official run)"
            )
        dataset_cfg = self.cfg.dataset
        episodes = dataset_cfg.episodes
        if episodes is None:
            episodes = self.suite_episodes()
        return self.lerobot_training_data(dataset_cfg.root, episodes)

    def suite_episodes(self) -> list[int]:
        """Episodes of the dataset whose task is one of this suite's instructions."""
        from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

        dataset_cfg = self.cfg.dataset
        instructions = suite_instructions(self.cfg.simulator.suite)  # no simulator, no assets needed
        meta = LeRobotDatasetMetadata(dataset_cfg.repo_id, root=dataset_cfg.root)
        episodes = [
            int(row["episode_index"]) for row in meta.episodes if instructions.intersection(row["tasks"])
        ]
        if not episodes:
            raise ValueError(
                f"dataset {dataset_cfg.repo_id} has no episode of a {self.cfg.simulator.suite} task; "
                "set env.dataset.episodes or use a dataset of this suite"
            )
        return episodes

    def sample_to_policy(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """A LeRobot frame (images CHW in [0, 1], upright; action chunk) → a policy training sample,
        through the input transform the env workers use on live frames."""
        return {
            **self.transforms.inputs(sample),
            "actions": sample[ACTION_KEY],
            "action_is_pad": sample[f"{ACTION_KEY}_is_pad"],
        }

    # -------------------------------------------------------------------------------------- rollouts
    def evaluation_episodes(self) -> list[EpisodeSpec]:
        evaluation = self.cfg.eval
        return protocol_episodes(
            self.cfg.simulator.suite,
            self.tasks,
            trials=evaluation.episodes,
            seed=evaluation.seed,
            max_steps=evaluation.max_steps,
            videos=evaluation.videos,
        )

    def make_env(self, task: str) -> LiberoRolloutEnv:
        return make_libero_env(self.settings, task)

    def openpi_inputs(self) -> functools.partial:
        """openpi's ``examples/libero/main.py`` observations (LIBERO-Plus's clients send the same)."""
        return functools.partial(self.transforms.openpi_inputs, image_size=int(self.cfg.image_size))

    def simulator_factory(self) -> functools.partial:
        """Picklable and free of config objects: LIBERO-Plus env clients rebuild it from settings."""
        return functools.partial(make_libero_env, self.settings)


class LiberoPlusAdapter(LiberoAdapter):
    """``env=libero_plus``: LIBERO training data of ``simulator.suite``, LIBERO-Plus evaluation.

    Needs LIBERO-Plus installed as ``libero`` in this environment (it replaces hf-libero); otherwise
    serve the policy (``scripts/serve.py``) and run ``envs.libero.client --plus`` where it is installed.
    """

    def evaluation_episodes(self) -> list[EpisodeSpec]:
        from envs.libero.env import PROTOCOL_MAX_STEPS
        from envs.libero.plus import load_task_list, plus_episodes, select_tasks

        plus = self.cfg.simulator.plus
        tasks = select_tasks(
            load_task_list(plus.task_list),
            plus.suites,
            plus.categories,
            plus.per_category,
            seed=self.cfg.eval.seed,
        )
        return plus_episodes(
            tasks, PROTOCOL_MAX_STEPS, seed=self.cfg.eval.seed, videos_per_category=self.cfg.eval.videos
        )
