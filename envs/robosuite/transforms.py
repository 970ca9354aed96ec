"""robosuite Lift ↔ policy, one transform pair for the recorded demonstrations, training and rollouts.

- :meth:`LiftTransforms.frame`: a simulator observation → the frame the expert's recorder writes
  (images of ``env.cameras``, upright; 8-D state: end-effector position, axis-angle orientation,
  gripper finger positions);
- :meth:`LiftTransforms.inputs`: a frame as read → the policy input;
- :meth:`LiftTransforms.outputs`: a policy action → OSC_POSE's (delta pose, gripper), clipped to [−1, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from envs.layout import STATE_KEY, as_read, camera_key, stack_cameras

STATE_NAMES = ("eef_x", "eef_y", "eef_z", "eef_rx", "eef_ry", "eef_rz", "gripper_left", "gripper_right")
ACTION_NAMES = ("dx", "dy", "dz", "drx", "dry", "drz", "gripper")


def robot_state(observation: Mapping[str, np.ndarray]) -> np.ndarray:
    """The 8-D state above from a robosuite observation (quaternions are x, y, z, w)."""
    rotation = Rotation.from_quat(observation["robot0_eef_quat"]).as_rotvec()
    return np.concatenate(
        [observation["robot0_eef_pos"], rotation, observation["robot0_gripper_qpos"]]
    ).astype(np.float32)


@dataclass(frozen=True)
class LiftTransforms:
    """``cameras``: robosuite camera names (``env.cameras``); ``instruction``: ``env.instruction``, which
    replaces the dataset's task text when set."""

    cameras: tuple[str, ...]
    instruction: str | None = None

    def frame(self, observation: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """A simulator observation → the frame the recorder writes (images as written)."""
        frame: dict[str, Any] = {camera_key(c): observation[f"{c}_image"] for c in self.cameras}
        frame[STATE_KEY] = robot_state(observation)
        frame["task"] = self.instruction
        return frame

    def inputs(self, frame: Mapping[str, Any]) -> dict[str, Any]:
        """A frame as read (a dataset row or a converted live frame) → the policy input."""
        return {
            "images": stack_cameras(frame, self.cameras),
            "state": frame[STATE_KEY],
            "instruction": self.instruction or frame["task"],
        }

    def live_inputs(self, observation: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """A live observation → the policy input, through the same :meth:`inputs` as the training data."""
        return self.inputs(as_read(self.frame(observation)))

    def outputs(self, action: np.ndarray) -> np.ndarray:
        return np.clip(action, -1.0, 1.0)
