"""DROID's config schema (``env=droid``), and the ``${droid_state_dim:…}`` / ``${droid_action_dim:…}``
resolvers that size it from the chosen state and action spaces."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import OmegaConf

from envs.droid import spaces
from envs.schema import EnvConfig, register_env_schema


@dataclass
class NoSimulatorConfig:
    """A real robot: nothing to simulate (evaluated by serving the policy)."""


@dataclass
class DroidEnvConfig(EnvConfig):
    """DROID: which recorded state and action the dataset holds (``envs.droid.spaces``)."""

    state_space: str = "joint"
    action_space: str = "joint_velocity"
    simulator: NoSimulatorConfig = field(default_factory=NoSimulatorConfig)


register_env_schema("droid_schema", DroidEnvConfig)
if not OmegaConf.has_resolver("droid_state_dim"):
    OmegaConf.register_new_resolver("droid_state_dim", spaces.state_dim)
    OmegaConf.register_new_resolver("droid_action_dim", spaces.action_dim)
