"""The robot laptop's side of a ROS-free DROID deployment: observation in, action chunk out.

Run beside DROID's control stack (``droid.robot_env.RobotEnv(action_space="joint_velocity",
gripper_action_space="position")``), with the fine-tuned policy served by ``scripts/serve.py``:

    from droid.robot_env import RobotEnv
    from envs.droid.client import DroidPolicyClient, run_episode
    client = DroidPolicyClient("ws://<gpu host>:8765")
    env = RobotEnv(action_space="joint_velocity", gripper_action_space="position")
    run_episode(env, client, "put the cucumber on the plate", "<ext serial>_left", "<wrist serial>_left")

Observation: an exterior and the wrist camera (HWC uint8 RGB, any size), joint positions (7),
gripper position in [0, 1]. Reply: ``(chunk, 8)`` joint velocities in [−1, 1] + gripper position;
the client clips, closes the gripper above 0.5, and executes ``open_loop_steps`` actions per request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.droid.transforms import policy_input, robot_action
from vla_train.serving.client import RemotePolicy


class DroidPolicyClient:
    """Builds the policy input exactly as training did, asks the server, returns robot commands."""

    def __init__(self, uri: str, timeout: float = 60.0) -> None:
        self.policy = RemotePolicy(uri, timeout=timeout)
        self.image_size = int(self.policy.metadata.get("image_size", 224))
        self.latencies: list[float] = []

    def act(
        self,
        exterior: np.ndarray,
        wrist: np.ndarray,
        joint_position: np.ndarray,
        gripper_position: float | np.ndarray,
        instruction: str,
    ) -> np.ndarray:
        """``(chunk, 8)`` robot commands for the current observation."""
        inputs = policy_input(exterior, wrist, joint_position, gripper_position, instruction, self.image_size)
        start = time.perf_counter()
        chunk = self.policy([inputs])[0]
        self.latencies.append(time.perf_counter() - start)
        if chunk.ndim != 2 or chunk.shape[-1] != 8:
            raise ValueError(f"expected (chunk, 8) joint-velocity + gripper actions, got {chunk.shape}")
        return np.stack([robot_action(action) for action in chunk])

    def close(self) -> None:
        self.policy.close()


@dataclass
class EpisodeRun:
    """What :func:`run_episode` did: control steps executed, and whether the operator stopped it."""

    steps: int
    stopped_by_operator: bool


def run_episode(
    env: Any,
    client: DroidPolicyClient,
    instruction: str,
    exterior_camera: str,
    wrist_camera: str,
    max_steps: int = 300,
    open_loop_steps: int = 8,
    control_hz: float = 15.0,
) -> EpisodeRun:
    """Drive a DROID ``RobotEnv`` for up to ``max_steps`` at ``control_hz`` (Table A3: 300 steps).

    The operator judges success (:mod:`envs.droid.trials`) and may end the episode early with Ctrl-C
    (task done, or hopeless): the robot stops after the current step.
    """
    chunk: list[np.ndarray] = []
    step = 0
    try:
        while step < max_steps:
            start = time.perf_counter()
            if not chunk:
                observation = env.get_observation()
                images, robot = observation["image"], observation["robot_state"]
                chunk = list(
                    client.act(
                        images[exterior_camera][..., :3],
                        images[wrist_camera][..., :3],
                        np.asarray(robot["joint_positions"]),
                        robot["gripper_position"],
                        instruction,
                    )[:open_loop_steps]
                )
            env.step(chunk.pop(0))
            step += 1
            time.sleep(max(0.0, 1.0 / control_hz - (time.perf_counter() - start)))
    except KeyboardInterrupt:
        return EpisodeRun(step, stopped_by_operator=True)
    return EpisodeRun(step, stopped_by_operator=False)
