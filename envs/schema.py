"""The config schema every environment starts from: its data, observation/action layout and rollout
protocol. Each environment subclasses :class:`EnvConfig` in its own ``envs/<env>/schema.py``, types
its ``simulator`` there and registers the schema that its YAML options start from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class DatasetConfig:
    """A LeRobot dataset by hub id, or a local root (``root``); ``generate`` writes it when missing."""

    repo_id: str = MISSING
    root: str | None = None
    episodes: list[int] | None = None
    generate: bool = False
    num_demos: int = 50
    video: bool = False
    cache_in_memory: bool = False


@dataclass
class EvalConfig:
    """The rollout protocol; environments with fixed task suites (LIBERO) add their own fields."""

    episodes: int = 10
    max_steps: int = 200
    videos: int = 2
    seed: int = 1000
    num_workers: int = 1  # env worker processes; the policy runs once per step on all of them
    tasks: list[int] | None = None  # benchmarks with task suites: a subset of task indices


@dataclass
class EnvConfig:
    """One environment: its data, its observation/action layout and its rollout protocol."""

    name: str = MISSING
    adapter: str = MISSING  # class path of the envs.base.EnvAdapter: data, transforms, simulator
    instruction: str | None = None
    cameras: list[str] = field(default_factory=list)
    image_size: int = 64
    state_dim: int = MISSING
    action_dim: int = MISSING
    chunk_size: int = 8
    n_action_steps: int = 8
    # states the policy sees per decision: the current one and the ``state_history − 1`` before it, the
    # first state repeated before an episode's start (VLANeXt: 8); 1 = the current state only
    state_history: int = 1
    # how the policy normalizes the state: null (the head's own: mean_std, π0.5's quantile) or one of
    # mean_std | min_max | quantile | identity (fed raw, as VLANeXt's official run does)
    state_normalization: str | None = None
    # how the policy normalizes actions, as state_normalization (VLANeXt's official run: min_max, the
    # per-suite bounds to [-1, 1])
    action_normalization: str | None = None
    # an action chunk running past its episode's end (envs/padding.py): masked | repeat_last (openpi's) |
    # zero_motion (VLANeXt's; delta actions only) | complete_chunks (VLA-Adapter's: no such samples)
    action_padding: str = "masked"
    fps: int = 20
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    simulator: Any = None  # each environment's schema types it (RobosuiteEnvConfig, LiberoEnvConfig, …)
    augmentation: Any = None  # training-time image augmentation (a _target_ node), e.g. env=droid's


def register_env_schema(name: str, schema: type) -> None:
    """``configs/env/*.yaml`` options start from ``defaults: [<name>, _self_]``."""
    ConfigStore.instance().store(group="env", name=name, node=schema)


register_env_schema("env_schema", EnvConfig)
