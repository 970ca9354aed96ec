"""robosuite's config schema (``env=robosuite_lift``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from envs.schema import EnvConfig, register_env_schema


@dataclass
class RobosuiteSimulatorConfig:
    """robosuite: the task and robot, and how the scripted expert records demonstrations."""

    task: str = "Lift"
    robot: str = "Panda"
    controller: str = "OSC_POSE"
    expert_noise: float = 0.1
    reflections: bool = False
    max_demo_steps: int = 150
    steps_after_success: int = 10


@dataclass
class RobosuiteEnvConfig(EnvConfig):
    simulator: RobosuiteSimulatorConfig = field(default_factory=RobosuiteSimulatorConfig)


register_env_schema("robosuite_schema", RobosuiteEnvConfig)
