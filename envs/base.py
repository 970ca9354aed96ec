"""What every environment provides: its training data and the transforms shared by training and rollout.

As in openpi, the mapping between an environment's raw observations/actions and the policy's inputs is
one small piece of code per environment, used both by the data loader (on dataset frames) and by the
evaluator (on live observations), so the two can never drift apart.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from envs.layout import ACTION_KEY, STATE_KEY, camera_key
from envs.padding import TrainedPadding, complete_chunk_indices
from vla_train.data.cache import InMemoryDataset
from vla_train.data.lerobot_io import (
    TransformedDataset,
    check_finite_values,
    dataset_statistics,
    load_lerobot_dataset,
)
from vla_train.rollout import EpisodeSpec, RolloutEnv, with_state_history


@dataclass
class TrainingData:
    """A map-style dataset of policy samples plus what the policy needs to normalize them."""

    dataset: torch.utils.data.Dataset
    stats: Mapping[str, Mapping[str, torch.Tensor]]
    state_key: str
    action_key: str


class EnvAdapter:
    """Base class of ``env.adapter`` classes; built with the whole ``env`` config group.

    A policy sample / observation is a dict with ``images`` ``(cameras, 3, H, W)`` float in [0, 1],
    ``state`` ``(S,)`` float (``(state_history, S)`` with ``env.state_history`` > 1, the current
    state last), ``instruction`` str, and for training ``actions`` ``(chunk, A)`` and
    ``action_is_pad`` ``(chunk,)``.
    """

    #: how many leading action dimensions are an end-effector delta (``env.action_padding=zero_motion``
    #: zeroes them); None where actions are not deltas
    motion_dims: int | None = None
    #: whether :meth:`evaluation_episodes` runs in a simulator; a real robot is evaluated by serving
    simulated: bool = True

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    # --- data -------------------------------------------------------------------------------------
    def training_data(self) -> TrainingData:
        raise NotImplementedError

    def lerobot_training_data(self, root: str | Path | None, episodes: Sequence[int] | None) -> TrainingData:
        """``env.dataset`` as policy samples: action chunks of ``chunk_size``, the dataset's statistics,
        :meth:`sample_to_policy` applied per frame, cached in memory when ``dataset.cache_in_memory``."""
        dataset_cfg = self.cfg.dataset
        frames = load_lerobot_dataset(
            dataset_cfg.repo_id,
            root,
            ACTION_KEY,
            self.cfg.chunk_size,
            episodes,
            state_key=STATE_KEY,
            state_history=self.cfg.get("state_history", 1),
        )
        self.check_dataset_layout(frames.meta, root or dataset_cfg.repo_id)
        stats = dataset_statistics(frames, [STATE_KEY, ACTION_KEY])
        check_finite_values(frames, [STATE_KEY, ACTION_KEY])
        padding = self.cfg.get("action_padding", "masked")
        transform: Callable[[Mapping[str, Any]], dict[str, Any]] = self.sample_to_policy
        if padding == "zero_motion":
            if self.motion_dims is None:
                raise ValueError(
                    f"env.action_padding=zero_motion: {type(self).__name__}'s actions are not end-effector "
                    "deltas, so no motion is not zero; use masked or complete_chunks"
                )
            transform = TrainedPadding(transform, self.motion_dims)
        elif padding == "repeat_last":
            transform = TrainedPadding(transform)
        dataset: torch.utils.data.Dataset = TransformedDataset(frames, transform)
        if padding == "complete_chunks":
            episodes_of_frames = frames.hf_dataset.with_format("numpy")["episode_index"]
            dataset = torch.utils.data.Subset(
                dataset, complete_chunk_indices(episodes_of_frames, self.cfg.chunk_size)
            )
        if dataset_cfg.cache_in_memory:
            dataset = InMemoryDataset(dataset, description=f"caching {dataset_cfg.repo_id}")
        return TrainingData(dataset, stats, STATE_KEY, ACTION_KEY)

    def check_dataset_layout(self, meta: Any, source: Any) -> None:
        """The dataset records ``env``'s cameras, state and action sizes and frame rate."""
        absent = [camera for camera in self.cfg.cameras if camera_key(camera) not in meta.features]
        if absent:
            recorded = sorted(k.removeprefix(camera_key("")) for k in meta.camera_keys)
            raise ValueError(
                f"env.cameras={list(self.cfg.cameras)}: dataset {source} has no camera {absent[0]!r}; it "
                f"records {recorded}"
            )
        stored = {STATE_KEY: self.dataset_state_dim(), ACTION_KEY: self.cfg.action_dim}
        for key, field in ((STATE_KEY, "state_dim"), (ACTION_KEY, "action_dim")):
            shape = tuple(meta.features[key]["shape"]) if key in meta.features else None
            if shape != (stored[key],):
                raise ValueError(
                    f"env.{field}={self.cfg[field]}, but dataset {source} stores {key} with shape {shape}"
                    + ("" if stored[key] == self.cfg[field] else f" (expected ({stored[key]},))")
                )
        if meta.fps != self.cfg.fps:
            raise ValueError(f"env.fps={self.cfg.fps}, but dataset {source} is recorded at {meta.fps} fps")

    def sample_to_policy(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """A dataset frame → a policy training sample (the layout above)."""
        raise NotImplementedError

    def dataset_state_dim(self) -> int:
        """The state size the dataset stores; the policy's (``env.state_dim``) unless the environment's
        transform derives the policy's state from another (LIBERO's ``state_layout``)."""
        return int(self.cfg.state_dim)

    # --- rollouts ---------------------------------------------------------------------------------
    def evaluation_episodes(self) -> list[EpisodeSpec]:
        """The evaluation protocol: every episode to run, with its seed, initial state and step limit."""
        raise NotImplementedError

    def check_evaluation_options(self) -> None:
        """Refuse ``env.eval`` choices this environment cannot run (a task it does not have), naming the
        key, the value and what is allowed. Called before training, so that a bad choice is not found
        only when the final evaluation starts; cheap: no simulator is imported. Nothing by default."""

    def make_env(self, task: str) -> RolloutEnv:
        """A rollout environment for ``task`` (simulator imported lazily), as the env workers use it;
        its ``policy_input``/``env_action`` are this environment's transform pair
        (``envs/<env>/transforms.py``), the one :meth:`sample_to_policy` uses on dataset frames."""
        raise NotImplementedError

    def env_factory(self) -> Callable[[str], Any]:
        """Picklable ``task -> rollout env`` for the spawned env workers, its inputs carrying the last
        ``env.state_history`` states when that is more than one."""
        factory, history = self.simulator_factory(), self.cfg.get("state_history", 1)
        return functools.partial(with_state_history, factory, history) if history > 1 else factory

    def simulator_factory(self) -> Callable[[str], Any]:
        """Picklable ``task -> rollout env`` as the simulator gives it (one state per input)."""
        return functools.partial(make_rollout_env, self.cfg)

    # --- serving ----------------------------------------------------------------------------------
    def openpi_inputs(self) -> Callable[[Mapping[str, Any]], dict[str, Any]] | None:
        """``observation -> policy input`` for the observations openpi's client for this environment
        sends (``scripts/serve.py`` answers them), through this environment's own transform; None
        where openpi has no client for it."""
        return None


def make_rollout_env(env_cfg: DictConfig, task: str) -> Any:
    """Build ``env_cfg``'s adapter and its rollout env for ``task``: the picklable env factory that
    spawned env workers call (``functools.partial(make_rollout_env, env_cfg)``)."""
    from hydra.utils import get_class

    return get_class(env_cfg.adapter)(env_cfg).make_env(task)
