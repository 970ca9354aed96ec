"""The DROID observation → policy input transform, shared by training data and the robot client.

Policy layout: images ``(2, 3, S, S)`` float32 in [0, 1] (an exterior camera, then the wrist camera),
each resized keeping its aspect ratio and zero-padded to a square (as openpi's DROID pipeline does);
state: the arm state of the dataset's state space (7 joint positions by default) + gripper position in
[0, 1]; action: the arm command of its action space (7 joint velocities in [−1, 1] by default) +
gripper position (:mod:`envs.droid.spaces`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_with_pad(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 → ``(size, size, 3)`` uint8: bilinear resize of the longer side, centred."""
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image
    scale = size / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    resized = np.asarray(Image.fromarray(image).resize((new_width, new_height), Image.BILINEAR))
    padded = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - new_height) // 2, (size - new_width) // 2
    padded[top : top + new_height, left : left + new_width] = resized
    return padded


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


def robot_action(action: np.ndarray, velocity: bool = True) -> np.ndarray:
    """A policy action → DROID's ``env.step`` input: gripper closed above 0.5; velocity commands
    clipped to [−1, 1] (position targets are passed through: RobotEnv bounds them itself)."""
    command = np.asarray(action, dtype=np.float64).copy()
    if velocity:
        command = np.clip(command, -1.0, 1.0)
    command[-1] = 1.0 if command[-1] > 0.5 else 0.0
    return command
