"""The robot laptop's side of a ROS-free DROID deployment: observation in, action chunk out.

Run beside DROID's control stack (``droid.robot_env.RobotEnv(action_space="joint_velocity",
gripper_action_space="position")``), with the fine-tuned policy served by ``scripts/serve.py``:

    from droid.robot_env import RobotEnv
    from envs.droid.client import DroidPolicyClient, run_episode
    client = DroidPolicyClient("ws://<gpu host>:8765")
    env = RobotEnv(action_space="joint_velocity", gripper_action_space="position")
    run_episode(env, client, "put the cucumber on the plate", "<ext serial>_left", "<wrist serial>_left")

Observation: an exterior and the wrist camera (HWC uint8 RGB, any size), the arm state of the
policy's state space (joint positions by default, or the end-effector pose), gripper position in
[0, 1]. Reply: ``(chunk, A)`` arm commands of its action space (joint velocities in [−1, 1] by default)
+ gripper position; the client clips velocities, closes the gripper above 0.5, and executes
``open_loop_steps`` actions per request. The spaces come with the server's metadata (the run's
``env.state_space`` / ``env.action_space``); ``RobotEnv`` must be opened with the same action space.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.droid import spaces
from envs.droid.transforms import policy_input, robot_action
from vla_train.serving.client import RemotePolicy


class DroidPolicyClient:
    """Builds the policy input exactly as training did, asks the server, returns robot commands."""

    def __init__(self, uri: str, timeout: float = 60.0) -> None:
        self.policy = RemotePolicy(uri, timeout=timeout)
        metadata = self.policy.metadata
        self.image_size = int(metadata.get("image_size", 224))
        self.state_space = str(metadata.get("state_space", "joint"))
        self.action_space = str(metadata.get("action_space", "joint_velocity"))
        spaces.check(self.state_space, self.action_space)
        self.action_dim = spaces.action_dim(self.action_space)
        self.latencies: list[float] = []

    def act(
        self,
        exterior: np.ndarray,
        wrist: np.ndarray,
        arm_state: np.ndarray,
        gripper_position: float | np.ndarray,
        instruction: str,
    ) -> np.ndarray:
        """``(chunk, A)`` robot commands for the current observation."""
        inputs = policy_input(exterior, wrist, arm_state, gripper_position, instruction, self.image_size)
        start = time.perf_counter()
        chunk = self.policy([inputs])[0]
        self.latencies.append(time.perf_counter() - start)
        if chunk.ndim != 2 or chunk.shape[-1] != self.action_dim:
            raise ValueError(
                f"expected (chunk, {self.action_dim}) {self.action_space} + gripper actions, "
                f"got {chunk.shape}"
            )
        velocity = spaces.is_velocity(self.action_space)
        return np.stack([robot_action(action, velocity) for action in chunk])

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
                        np.asarray(robot[spaces.ROBOT_STATE_KEYS[client.state_space]]),
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
