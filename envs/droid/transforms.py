"""The DROID observation → policy input transform, shared by training data and the robot client.

Policy layout: images ``(2, 3, S, S)`` float32 in [0, 1] (an exterior camera, then the wrist camera),
each resized keeping its aspect ratio and zero-padded to a square (as openpi's DROID pipeline does);
state: the arm state of the dataset's state space (7 joint positions by default) + gripper position in
[0, 1]; action: the arm command of its action space (7 joint velocities in [−1, 1] by default) +
gripper position (:mod:`envs.droid.spaces`).
"""

from __future__ import annotations

import numpy as np

from envs import openpi
from envs.images import resize_with_pad

#: what openpi's DROID client (``examples/droid/main.py``) sends
OPENPI_EXTERIOR, OPENPI_WRIST = "observation/exterior_image_1_left", "observation/wrist_image_left"
OPENPI_JOINTS, OPENPI_GRIPPER = "observation/joint_position", "observation/gripper_position"
OPENPI_KEYS = (OPENPI_EXTERIOR, OPENPI_WRIST, OPENPI_JOINTS, OPENPI_GRIPPER, openpi.PROMPT_KEY)


def policy_input(
    exterior: np.ndarray,
    wrist: np.ndarray,
    arm_state: np.ndarray,
    gripper_position,
    instruction: str,
    size: int,
) -> dict:
    """Camera frames (HWC uint8) and robot state (joints or end-effector pose, gripper) → one policy input."""
    images = np.stack([resize_with_pad(exterior, size), resize_with_pad(wrist, size)])
    state = np.concatenate(
        [
            np.asarray(arm_state, np.float32).reshape(-1),
            np.asarray(gripper_position, np.float32).reshape(1),
        ]
    )
    return {
        "images": images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0,
        "state": state,
        "instruction": instruction,
    }


def openpi_policy_input(observation: dict, size: int, state_space: str = "joint") -> dict:
    """openpi's DROID observation → the policy input, through :func:`policy_input` as training data.
    openpi's client sends joint positions, so only a policy trained on the ``joint`` state space can
    read it."""
    if state_space != "joint":
        raise ValueError(
            f"openpi's DROID client sends joint positions; this policy was trained on env.state_space="
            f"{state_space}: use envs.droid.client, which sends the policy's own state space"
        )
    return policy_input(
        openpi.image(observation, OPENPI_EXTERIOR, OPENPI_KEYS),
        openpi.image(observation, OPENPI_WRIST, OPENPI_KEYS),
        openpi.vector(observation, OPENPI_JOINTS, 7, OPENPI_KEYS),
        openpi.vector(observation, OPENPI_GRIPPER, 1, OPENPI_KEYS),
        openpi.prompt(observation, OPENPI_KEYS),
        size,
    )


def robot_action(action: np.ndarray, velocity: bool = True) -> np.ndarray:
    """A policy action → DROID's ``env.step`` input: gripper closed above 0.5; velocity commands
    clipped to [−1, 1] (position targets are passed through: RobotEnv bounds them itself)."""
    command = np.asarray(action, dtype=np.float64).copy()
    if not np.isfinite(command).all():  # np.clip keeps NaN: it would reach the robot
        raise ValueError(
            f"the policy's action {command.tolist()} is not finite (NaN or infinity); the robot is not moved"
        )
    if velocity:
        command = np.clip(command, -1.0, 1.0)
    command[-1] = 1.0 if command[-1] > 0.5 else 0.0
    return command
