"""LIBERO's and LIBERO-Plus's config schemas (``env=libero_*``, ``env=libero_plus``), and the
``${suite_steps:…}`` resolver the LIBERO presets use."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING, OmegaConf

from envs.schema import EnvConfig, register_env_schema


@dataclass
class LiberoSimulatorConfig:
    """LIBERO: the suite, the rendering and reset protocol, and where its assets and config live."""

    suite: str = MISSING
    camera_size: int = 256
    num_steps_wait: int = 10
    hard_reset: bool = True
    control_fps: int = 20
    assets_dir: str | None = None
    config_dir: str | None = None


@dataclass
class LiberoEnvConfig(EnvConfig):
    # the policy's state from the datasets' 8-D one: dataset (as stored) | vlanext (7-D: pose and one
    # gripper closedness, as VLANeXt's official run; env.state_dim follows)
    state_layout: str = "dataset"
    simulator: LiberoSimulatorConfig = field(default_factory=LiberoSimulatorConfig)


@dataclass
class LiberoPlusSelection:
    """Which LIBERO-Plus tasks to evaluate (``envs.libero.plus``)."""

    task_list: str | None = None
    suites: list[str] | None = None
    categories: list[str] | None = None
    per_category: int | None = None


@dataclass
class LiberoPlusSimulatorConfig(LiberoSimulatorConfig):
    plus: LiberoPlusSelection = field(default_factory=LiberoPlusSelection)


@dataclass
class LiberoPlusEnvConfig(LiberoEnvConfig):
    simulator: LiberoPlusSimulatorConfig = field(default_factory=LiberoPlusSimulatorConfig)


def libero_state_dim(layout: str) -> int:
    """``${libero_state_dim:${env.state_layout}}``: the policy's state size for a LIBERO state layout."""
    from envs.libero.transforms import STATE_LAYOUTS

    if layout not in STATE_LAYOUTS:
        raise ValueError(f"env.state_layout={layout!r}: LIBERO has {sorted(STATE_LAYOUTS)}")
    return STATE_LAYOUTS[layout]


def suite_steps(suite: str, object_steps: int, other_steps: int) -> int:
    """``${suite_steps:<suite>,<object>,<others>}``: Table A1 gives LIBERO-Object fewer steps."""
    return int(object_steps if suite == "libero_object" else other_steps)


register_env_schema("libero_schema", LiberoEnvConfig)
register_env_schema("libero_plus_schema", LiberoPlusEnvConfig)
if not OmegaConf.has_resolver("suite_steps"):
    OmegaConf.register_new_resolver("suite_steps", suite_steps)
if not OmegaConf.has_resolver("libero_state_dim"):
    OmegaConf.register_new_resolver("libero_state_dim", libero_state_dim)
